// Permission requests from dapps (ERC-7715 `wallet_grantPermissions` on the companion's /rpc):
// each pending request shown decoded, with Approve and Cancel. Approving runs the same ceremonies
// as the rest of the page, through the same routes: the agent is created (CreateAgentKey,
// /kms/create-agent-key), granted the session the request maps onto (GrantSession,
// /kms/agent-sessions, whose operation is shown before the passkey signs it), then the request is
// resolved (/kms/permission-requests/resolve) and the dapp answered. The agent credential goes to
// the dapp only when the owner ticks the box; otherwise it is shown here once, like any new
// agent's. The DOM is built with textContent only.

import * as api from './api.js';
import { assert, describeWebAuthnError } from './webauthn.js';
import { weiToEth, describeSelector, short, fmtTime } from './eth.js';

const $ = (id) => document.getElementById(id);
let busy = false;
let timer = null;

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'onclick') el.addEventListener('click', v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function facts(rows) {
  return h('dl', { class: 'facts' }, rows.filter(([, v]) => v !== undefined && v !== null && v !== '').map(([k, v, cls]) =>
    h('div', { class: cls && cls.includes('wide') ? 'wide' : null }, h('dt', {}, k), h('dd', { class: cls || null }, v))));
}

function say(msg) {
  $('permreq-status').textContent = msg;
}

function fail(e, action) {
  let text = (e && e.message) || String(e);
  if (e instanceof api.ApiError) text = `${text} (code: ${e.code}${e.status ? ` · HTTP ${e.status}` : ''})`;
  else if (e && describeWebAuthnError(e)) text = describeWebAuthnError(e);
  say(`${action} failed: ${text}`);
}

async function ceremony(keyId, purpose, payload) {
  const { body: begin } = await api.post('/BeginAuthentication', { KeyId: keyId, Purpose: purpose, Payload: payload });
  const credential = await assert(begin.Options);
  return { begin, webAuthn: { ChallengeId: begin.ChallengeId, Credential: credential } };
}

function describeSession(s) {
  const targets = (s.targets || []).map((t) =>
    typeof t === 'string'
      ? `${t}: plain transfers`
      : `${t.target}: ${(t.selectors || []).map(describeSelector).join(', ') || 'plain transfers'}`);
  const tokens = (s.tokens || []).map((t) => `${t.token}: cap ${t.cap} (token base units)`);
  return [
    ['Targets and functions', targets.join('\n') || 'none', 'mono pre wide'],
    ['Spend cap', `${weiToEth(BigInt(s.spendCap || 0))} ETH`],
    ['Gas budget', `${weiToEth(BigInt(s.gasCap || 0))} ETH`],
    ['ERC-20 caps', tokens.join('\n') || 'none', 'mono pre wide'],
    ['Valid', `${fmtTime(s.validAfter)} → ${fmtTime(s.validUntil)}`],
  ];
}

function requestCard(r) {
  const handOver = h('input', { type: 'checkbox', id: `permreq-hand-${r.requestId}`, class: 'permreq-hand' });
  const approve = h('button', { type: 'button', class: 'permreq-approve' }, 'Approve with passkey');
  const cancel = h('button', { type: 'button', class: 'secondary permreq-cancel' }, 'Cancel request');
  approve.addEventListener('click', () => decide(r, true, handOver.checked, approve));
  cancel.addEventListener('click', () => decide(r, false, false, cancel));
  const dropped = (r.dropped || []).map((d) => `${d.type}: ${(d.unsupported || []).map((u) => `${u.name} (${u.reason})`).join('; ')}`);
  return h('article', { class: 'card permreq', 'data-request-id': r.requestId, 'aria-label': `Permission request ${r.requestId}` },
    h('h3', {}, `Request ${short(r.requestId)} from ${r.requester}`),
    facts([
      ['Wallet', r.walletId, 'mono'],
      ['Permissions asked', (r.permissions || []).map((p) => p.type).join(', ')],
      ...describeSession(r.session || {}),
      ['Not granted (optional, cannot be enforced)', dropped.join('\n'), 'pre wide'],
      ['Answer before', fmtTime(r.expiresAt)],
    ]),
    h('div', { class: 'row' }, handOver, h('label', { for: handOver.id }, 'Hand the agent credential to the requester (otherwise it is shown to you once)')),
    h('div', { class: 'row' }, approve, cancel));
}

function showCredential(c) {
  $('credential-facts').replaceChildren(...facts([
    ['Agent key id', c.keyId, 'mono cred-key-id'],
    ['Agent address', c.agentAddress, 'mono cred-address'],
    ['Expires', fmtTime(c.expiresAt)],
  ]).children);
  $('jwt').textContent = c.agentCredential;
  $('credential-section').hidden = false;
  $('credential-h').focus();
}

async function resolveApproved(r, keyId, handOver, credential) {
  // A grant still pending (not yet included) is retried until it is active (about a minute).
  for (let i = 0; ; i += 1) {
    try {
      const { body } = await api.post('/kms/permission-requests/resolve', {
        requestId: r.requestId,
        decision: 'approve',
        keyId,
        credentialTo: handOver ? 'requester' : 'owner',
        ...(handOver ? { credential } : {}),
      });
      return body;
    } catch (e) {
      if (!(e instanceof api.ApiError) || e.code !== 'permission_not_granted' || i >= 30) throw e;
      say('Waiting for the session to be included…');
      await new Promise((ok) => setTimeout(ok, 2000));
    }
  }
}

async function decide(r, approve, handOver, button) {
  if (busy) return;
  busy = true;
  button.disabled = true;
  const action = approve ? 'Approve request' : 'Cancel request';
  try {
    if (!approve) {
      await api.post('/kms/permission-requests/resolve', { requestId: r.requestId, decision: 'reject' });
      say(`Request ${short(r.requestId)} cancelled: the dapp was told you rejected it.`);
    } else {
      say('Confirm with your passkey to create the agent…');
      const mint = await ceremony(r.walletId, 'CreateAgentKey', r.createAgent);
      const { body: agent } = await api.post('/kms/create-agent-key', {
        humanKeyId: r.walletId,
        ...r.createAgent,
        webAuthnAssertion: mint.webAuthn,
      });
      say('Confirm with your passkey to sign the session’s UserOperation…');
      const grant = await ceremony(agent.keyId, 'GrantSession', r.session);
      await api.post('/kms/agent-sessions', { keyId: agent.keyId, ...r.session, webAuthnAssertion: grant.webAuthn });
      const done = await resolveApproved(r, agent.keyId, handOver, agent.agentCredential);
      if (done.credentialTo === 'requester') {
        say(`Request ${short(r.requestId)} approved: agent ${agent.keyId}, its credential handed to the requester.`);
      } else {
        showCredential(agent);
        say(`Request ${short(r.requestId)} approved: agent ${agent.keyId}. Its credential is shown above, once.`);
      }
    }
    await load();
  } catch (e) {
    fail(e, action);
  } finally {
    busy = false;
    button.disabled = false;
  }
}

async function load() {
  const { body } = await api.post('/kms/permission-requests', {});
  const list = (body && body.requests) || [];
  $('permreq-section').hidden = list.length === 0 && !$('permreq-list').childElementCount;
  $('permreq-list').replaceChildren(
    ...(list.length ? list.map(requestCard) : [h('p', { class: 'hint' }, 'No pending requests.')]),
  );
}

async function poll() {
  if (!busy && document.visibilityState === 'visible') {
    try {
      await load();
    } catch {
      // No API key yet, or the companion is away: the next look tries again.
    }
  }
  timer = setTimeout(poll, 4000);
}

$('permreq-refresh').addEventListener('click', () => load().catch((e) => fail(e, 'Load requests')));
if (!timer) poll();
