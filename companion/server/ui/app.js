// The owner's page: wallets, agents, sessions, revocation, intents.
// Everything goes through the companion's public HTTP API (api.js) and the
// browser's WebAuthn (webauthn.js). The DOM is built with textContent only
// (the CSP enforces Trusted Types with no policy, so HTML sinks are closed).
// An agent credential is written into one element, never logged or stored,
// and removed when hidden or when the page is left.

import * as api from './api.js';
import { createPasskey, assert, describeWebAuthnError } from './webauthn.js';
import {
  isAddress,
  ethToWei,
  weiToEth,
  weiToGwei,
  toBaseUnits,
  fromBaseUnits,
  describePeriod,
  parseFunction,
  describeSelector,
  splitFunctions,
  short,
  fmtTime,
  toLocalInput,
  fromLocalInput,
} from './eth.js';

const $ = (id) => document.getElementById(id);

/** Build an element: h('p', {class: 'x'}, 'text', child, ...). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'onclick') el.addEventListener('click', v);
    else if (k === 'onsubmit') el.addEventListener('submit', v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const state = {
  mode: null, // 'open' | 'required' | null (unknown)
  wallets: [], // [{meta: KeyMetadata, agents: [ListedAgentKey]}]
  selected: null, // agent keyId
  busy: false,
  poll: null,
  keyEditing: false, // the API key form is open
};

// The agent panel: a static element moved into the selected agent's wallet card.
const panel = $('agent-section');

// ------------------------------------------------------------------ notices

function setStatus(msg) {
  $('status').textContent = msg;
}

function clearError() {
  $('notice').hidden = true;
  for (const el of document.querySelectorAll('[aria-invalid="true"]')) el.removeAttribute('aria-invalid');
}

/** Show an error: the API's `{error, code}` and HTTP status, or a WebAuthn/browser error. */
function showError(e, action) {
  let text;
  let code = '';
  if (e instanceof api.ApiError) {
    text = e.message;
    code = e.status ? `code: ${e.code} · HTTP ${e.status}` : `code: ${e.code}`;
  } else if (e && describeWebAuthnError(e)) {
    text = describeWebAuthnError(e);
    code = `${e.name}${e.message ? `: ${e.message}` : ''}`;
  } else {
    text = (e && e.message) || String(e);
  }
  $('notice-title').textContent = action ? `${action} failed` : 'Error';
  $('notice-text').textContent = text;
  $('notice-code').textContent = code;
  $('notice-code').hidden = !code;
  const details = [];
  if (e instanceof api.ApiError && e.details) {
    // The error body's other fields; its `details` object (e.g. what remains of a session's
    // budgets) one field a line. Empty values say nothing and are left out.
    const { details: inner, ...rest } = e.details;
    const fields = inner && typeof inner === 'object' && !Array.isArray(inner) ? { ...rest, ...inner } : e.details;
    for (const [k, v] of Object.entries(fields)) {
      if (v === null || v === undefined || (typeof v === 'object' && !Object.keys(v).length)) continue;
      details.push(`${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`);
    }
  }
  if (e && e.hint) details.push(e.hint);
  $('notice-details').textContent = details.join('\n');
  $('notice-details').hidden = !details.length;
  $('notice').hidden = false;
  setStatus('');
  if (e instanceof api.ApiError && e.status === 401 && e.code.startsWith('api_key')) {
    state.keyEditing = true;
    renderKeyState();
    $('api-key').focus();
  } else if (e && e.field) {
    $(e.field).focus();
  }
}

/** A validation error tied to a form field. */
function fieldError(id, message) {
  const el = $(id);
  el.setAttribute('aria-invalid', 'true');
  const e = new Error(message);
  e.field = id;
  return e;
}

/** Run one user action: one at a time, its button disabled, errors shown. */
async function run(action, button, fn) {
  if (state.busy) return undefined;
  state.busy = true;
  clearError();
  setStatus(`${action}…`);
  if (button) button.disabled = true;
  document.body.setAttribute('aria-busy', 'true');
  try {
    return await fn();
  } catch (e) {
    showError(e, action);
    return undefined;
  } finally {
    state.busy = false;
    if (button) button.disabled = false;
    document.body.removeAttribute('aria-busy');
  }
}

// ------------------------------------------------------------------ health and key

async function checkHealth() {
  const el = $('health');
  try {
    const { status, body } = await api.health();
    state.mode = body ? body.apiKeyMode : null;
    if (status === 200 && body) {
      const mode = body.apiKeyMode === 'open' ? 'open mode: no API key needed' : 'API key required';
      const chain = body.chain
        ? `chain ${body.chain.chainId} (EntryPoint ${body.chain.entryPointVersion})`
        : 'no chain configured';
      el.textContent = `Companion ${body.version} · TEE ${body.taVersion || 'up'} · ${chain} · ${mode}`;
      el.className = 'health ok';
    } else {
      el.textContent = 'Companion degraded: the TEE or the database does not answer';
      el.className = 'health bad';
    }
  } catch (e) {
    el.textContent = `The companion does not answer (${e.message})`;
    el.className = 'health bad';
  }
}

function renderKeyState() {
  const k = api.apiKey();
  const m = /^(kms_[A-Za-z0-9]+)_/.exec(k);
  const editing = state.keyEditing || (!k && state.mode !== 'open');
  $('api-key-set').hidden = editing;
  $('api-key-form').hidden = !editing;
  $('api-key-forget').hidden = !k;
  $('api-key-change').textContent = k ? 'Change key' : 'Set a key';
  $('api-key-state').textContent = k
    ? `A key is set for this tab${m ? ` (${m[1]}_…)` : ''}.`
    : 'No key needed: this companion runs in open mode.';
}

// ------------------------------------------------------------------ ceremonies

/**
 * `/BeginAuthentication` for `purpose` over `payload`, then the passkey; returns the `WebAuthn` object.
 * With `review`, the begin answer is shown to the owner first (`review(begin)` resolves once approved
 * and throws when cancelled), so nothing is signed unseen.
 */
async function ceremony(keyId, purpose, payload, prompt, review) {
  const { body: begin } = await api.post('/BeginAuthentication', {
    KeyId: keyId,
    Purpose: purpose,
    Payload: payload,
  });
  if (review) await review(begin);
  setStatus(prompt || 'Confirm with your passkey…');
  const credential = await assert(begin.Options);
  return { begin, webAuthn: { ChallengeId: begin.ChallengeId, Credential: credential } };
}

async function register(ev) {
  ev.preventDefault();
  const btn = ev.submitter || $('register-form').querySelector('button');
  await run('Create wallet', btn, async () => {
    const description = $('wallet-description').value.trim();
    const { body: begin } = await api.post('/BeginRegistration', description ? { Description: description } : {});
    setStatus('Create a passkey for the new wallet…');
    const credential = await createPasskey(begin.Options);
    setStatus('Creating the wallet in the TEE…');
    const { body: done } = await api.post('/CompleteRegistration', {
      ChallengeId: begin.ChallengeId,
      Credential: credential,
    });
    $('wallet-description').value = '';
    await loadWallets();
    setStatus(`Wallet created: owner address ${done.Address}.`);
    const heading = $(`w-${done.KeyId}`);
    if (heading) heading.focus();
  });
}

// ------------------------------------------------------------------ wallets and agents

/** Run `fn` over `items`, at most `n` at a time. */
async function pool(items, n, fn) {
  const out = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  return out;
}

async function loadWallets() {
  const keys = [];
  let marker;
  for (let page = 0; page < 20; page++) {
    const body = marker ? { Limit: 100, Marker: marker } : { Limit: 100 };
    const { body: r } = await api.post('/ListKeys', body, { target: 'ListKeys' });
    keys.push(...r.Keys);
    if (!r.Truncated || !r.NextMarker) break;
    marker = r.NextMarker;
  }
  const wallets = await pool(keys, 4, async (k) => {
    const [d, a] = await Promise.all([
      api.post('/DescribeKey', { KeyId: k.KeyId }, { target: 'DescribeKey' }),
      api.post('/kms/list-agent-keys', { humanKeyId: k.KeyId }),
    ]);
    return { meta: d.body.KeyMetadata, agents: a.body.agentKeys };
  });
  wallets.sort((x, y) => y.meta.CreationDate - x.meta.CreationDate || (x.meta.KeyId < y.meta.KeyId ? -1 : 1));
  state.wallets = wallets;
  renderWallets();
}

function facts(rows) {
  return h(
    'dl',
    { class: 'facts' },
    rows
      .filter((r) => r)
      .map(([k, v, cls, wide]) =>
        h('div', { class: wide ? 'wide' : null }, h('dt', {}, k), h('dd', { class: cls || null }, v === null || v === undefined || v === '' ? '—' : v)),
      ),
  );
}

function badge(status) {
  return h('span', { class: `badge badge-${status}` }, status);
}

/** The agent's sessions that are live on chain (one per account). */
function activeSessions(a) {
  return (a.sessions || []).filter((s) => s.status === 'active');
}

function sessionSummary(a) {
  const s = a.session;
  if (!s) return 'None';
  const cap = s.spendCap ? `${weiToEth(s.spendCap)} ETH` : '?';
  const periodic = s.period ? ` · ${periodicBudget(s)}` : '';
  const more = activeSessions(a).length > 1 ? ` · on ${activeSessions(a).length} accounts` : '';
  return `${cap}${periodic} · until ${s.validUntil ? fmtTime(s.validUntil) : 'no end'}${more}`;
}

/** A session's periodic budget in words: "0.1 ETH per day". */
function periodicBudget(s) {
  return `${weiToEth(s.periodCap)} ETH per ${describePeriod(s.period)}`;
}

function agentName(a) {
  return a.label || `Agent #${a.agentIndex}`;
}

function agentRow(a) {
  const name = agentName(a);
  return h(
    'tr',
    { 'data-key-id': a.keyId, 'data-status': a.status, class: state.selected === a.keyId ? 'selected' : null },
    h('th', { scope: 'row', 'data-label': 'Agent' }, h('span', { class: 'agent-label' }, name), h('span', { class: 'mono small block' }, a.keyId)),
    h('td', { 'data-label': 'Address', class: 'mono agent-address' }, a.agentAddress || '—'),
    h('td', { 'data-label': 'Status', class: 'agent-status' }, badge(a.status)),
    h('td', { 'data-label': 'Credential expires' }, a.status === 'active' ? fmtTime(a.expiresAt) : '—'),
    h('td', { 'data-label': 'Session', class: 'agent-session' }, sessionSummary(a)),
    h(
      'td',
      { class: 'actions' },
      h('button', { type: 'button', class: 'secondary', 'aria-label': `Manage agent ${name}`, onclick: () => selectAgent(a.keyId) }, 'Manage'),
    ),
  );
}

function agentsTable(w) {
  if (!w.agents.length) return h('p', { class: 'hint' }, 'No agents yet.');
  const cols = ['Agent', 'Address', 'Status', 'Credential expires', 'Session', 'Actions'];
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { class: 'agents' },
      h('caption', { class: 'sr-only' }, `Agents of ${w.meta.Description || w.meta.KeyId}`),
      h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, w.agents.map(agentRow)),
    ),
  );
}

function createAgentForm(m) {
  const id = m.KeyId;
  const label = h('input', { id: `label-${id}`, name: 'label', maxlength: 128, autocomplete: 'off', required: true, placeholder: 'e.g. trading-bot' });
  const ttl = h('input', { id: `ttl-${id}`, name: 'ttl', type: 'number', min: 1, max: 72, step: 1, value: 72, required: true, inputmode: 'numeric' });
  const btn = h('button', { type: 'submit' }, 'Create agent');
  const headingId = `ca-${id}`;
  return h(
    'form',
    {
      class: 'create-agent',
      'aria-labelledby': headingId,
      novalidate: true,
      onsubmit: (ev) => {
        ev.preventDefault();
        createAgent(m, label, ttl, btn);
      },
    },
    h('h4', { id: headingId }, 'Create an agent'),
    h(
      'div',
      { class: 'grid' },
      h('div', {}, h('label', { for: label.id }, 'Agent label'), label),
      h('div', {}, h('label', { for: ttl.id }, 'Credential lifetime (hours, 1–72)'), ttl),
    ),
    h('div', { class: 'row' }, btn),
  );
}

function walletCard(w) {
  const m = w.meta;
  const withSession = w.agents.find((a) => a.session && a.session.account);
  const account = withSession ? withSession.session.account : null;
  const headingId = `w-${m.KeyId}`;
  return h(
    'article',
    { class: 'card wallet', 'aria-labelledby': headingId, 'data-wallet-id': m.KeyId },
    h('h3', { id: headingId, tabindex: '-1' }, m.Description || 'Wallet'),
    facts([
      ['Wallet id', m.KeyId, 'mono'],
      ['Owner address', m.Address, 'mono owner-address'],
      account && ['Smart account', account, 'mono smart-account'],
      ['Created', fmtTime(m.CreationDate)],
    ]),
    h('h4', {}, 'Agents'),
    agentsTable(w),
    createAgentForm(m),
  );
}

/** Where focus is, so that it can come back after a re-render. */
function focusMark() {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  if (panel.contains(el)) return { el };
  const tr = el.closest && el.closest('tr[data-key-id]');
  if (tr) return { row: tr.dataset.keyId };
  return el.id ? { id: el.id } : null;
}

function focusRestore(mark) {
  if (!mark || (document.activeElement && document.activeElement !== document.body)) return;
  let el = null;
  if (mark.el) el = mark.el.isConnected ? mark.el : null;
  else if (mark.row) el = document.querySelector(`tr[data-key-id="${CSS.escape(mark.row)}"] button`);
  else if (mark.id) el = $(mark.id);
  if (el && !el.disabled) el.focus({ preventScroll: true });
}

function renderWallets() {
  const mark = focusMark();
  $('agent-home').append(panel);
  const el = $('wallets');
  if (!state.wallets.length) {
    el.replaceChildren(h('p', { class: 'hint' }, 'No wallets yet. Register a passkey above to create one.'));
  } else {
    el.replaceChildren(...state.wallets.map(walletCard));
  }
  if (state.selected) renderAgent(false);
  focusRestore(mark);
}

async function createAgent(m, labelInput, ttlInput, btn) {
  await run('Create agent', btn, async () => {
    const label = labelInput.value.trim();
    if (!label) throw fieldError(labelInput.id, 'Give the agent a label.');
    const hours = Number(ttlInput.value);
    if (!Number.isInteger(hours) || hours < 1 || hours > 72) {
      throw fieldError(ttlInput.id, 'The credential lifetime must be a whole number of hours from 1 to 72.');
    }
    const payload = { label, ttlSecs: hours * 3600 };
    const { webAuthn } = await ceremony(m.KeyId, 'CreateAgentKey', payload, 'Confirm with your passkey to create the agent…');
    setStatus('Deriving the agent key in the TEE…');
    const { body } = await api.post('/kms/create-agent-key', {
      humanKeyId: m.KeyId,
      ...payload,
      webAuthnAssertion: webAuthn,
    });
    showCredential(body);
    setStatus(`Agent ${body.keyId} created. Copy its credential now: it is shown only once.`);
    await loadWallets();
  });
}

// ------------------------------------------------------------------ the credential, shown once

function showCredential(c) {
  $('credential-facts').replaceChildren(
    ...facts([
      ['Agent key id', c.keyId, 'mono cred-key-id'],
      ['Agent address', c.agentAddress, 'mono cred-address'],
      ['Expires', fmtTime(c.expiresAt)],
      ['Generation', c.generation],
    ]).children,
  );
  $('jwt').textContent = c.agentCredential;
  $('jwt-copied').textContent = '';
  $('credential-section').hidden = false;
  $('credential-h').focus();
}

function hideCredential() {
  $('jwt').textContent = '';
  $('credential-facts').replaceChildren();
  $('jwt-copied').textContent = '';
  $('credential-section').hidden = true;
}

async function copyCredential() {
  const el = $('jwt');
  const text = el.textContent;
  if (!text) return;
  try {
    await navigator.clipboard.writeText(text);
    $('jwt-copied').textContent = 'Copied to the clipboard.';
  } catch {
    // No clipboard permission: select the text so the user can copy it.
    const range = document.createRange();
    range.selectNodeContents(el);
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    $('jwt-copied').textContent = 'Selected: press Ctrl+C (⌘C) to copy.';
  }
}

// ------------------------------------------------------------------ one agent

function findAgent(keyId) {
  for (const w of state.wallets) {
    const a = w.agents.find((x) => x.keyId === keyId);
    if (a) return { wallet: w, agent: a };
  }
  return null;
}

function selectAgent(keyId) {
  const changed = state.selected !== keyId;
  state.selected = keyId;
  if (changed) {
    $('grant-result').hidden = true;
    $('grant-result').replaceChildren();
    $('intents').replaceChildren();
    $('revoke-result').hidden = true;
    $('revoke-result').replaceChildren();
    resetGrantForm();
  }
  for (const tr of document.querySelectorAll('tr[data-key-id]')) {
    tr.classList.toggle('selected', tr.dataset.keyId === keyId);
  }
  renderAgent(true);
  loadIntents();
}

function closeAgent() {
  const keyId = state.selected;
  state.selected = null;
  stopPolling();
  panel.hidden = true;
  $('agent-home').append(panel);
  for (const tr of document.querySelectorAll('tr.selected')) tr.classList.remove('selected');
  const row = keyId && document.querySelector(`tr[data-key-id="${CSS.escape(keyId)}"] button`);
  if (row) row.focus();
}

function resetGrantForm() {
  const now = new Date();
  now.setSeconds(0, 0);
  $('grant-from').value = toLocalInput(now);
  $('grant-until').value = toLocalInput(new Date(now.getTime() + 7 * 24 * 3600 * 1000));
  $('grant-tz').textContent = `Times are in your local time zone (${Intl.DateTimeFormat().resolvedOptions().timeZone}).`;
  syncPeriodChoice();
}

function renderAgent(focus) {
  const found = state.selected && findAgent(state.selected);
  if (!found) {
    panel.hidden = true;
    $('agent-home').append(panel);
    return;
  }
  const { wallet, agent: a } = found;
  // Show the panel in the wallet's card, right under its agents.
  const card = document.querySelector(`article[data-wallet-id="${CSS.escape(wallet.meta.KeyId)}"]`);
  const form = card && card.querySelector('form.create-agent');
  if (form && panel.nextElementSibling !== form) card.insertBefore(panel, form);
  $('agent-h').textContent = `Agent “${agentName(a)}”`;
  const s = a.session;
  $('agent-facts').replaceChildren(
    ...facts([
      ['Agent key id', a.keyId, 'mono'],
      ['Address', a.agentAddress, 'mono'],
      ['Status', badge(a.status)],
      ['Wallet', `${wallet.meta.Description || 'Wallet'} (${short(wallet.meta.KeyId)})`],
      ['Derivation path', a.derivationPath, 'mono'],
      ['Created', fmtTime(a.createdAt)],
      a.status === 'active' && ['Credential expires', fmtTime(a.expiresAt)],
      ['Credential generation', a.generation],
      a.revokedAt && ['Revoked', fmtTime(a.revokedAt)],
      ['Smart account', s ? s.account : 'No session granted yet', s ? 'mono' : null],
      ...(s ? sessionFacts(s) : []),
      (a.sessions || []).length > 0 && ['Sessions', sessionList(a.sessions), null, true],
    ]).children,
  );
  const active = a.status === 'active';
  $('grant-form').hidden = !active;
  $('grant-inactive').hidden = active;
  $('grant-submit').disabled = !active;
  $('revoke').disabled = !active;
  $('revoke').textContent = active ? 'Revoke this agent…' : 'Revoked';
  $('revoke-row').hidden = false;
  $('revoke-confirm').hidden = true;
  $('revoke-question').textContent = `Revoke agent “${agentName(a)}”? Its credential stops working at once; this cannot be undone.`;
  panel.hidden = false;
  if (focus) $('agent-h').focus();
}

// ------------------------------------------------------------------ the session, as granted

/**
 * Every session of the agent, one per grant (newest first): its account and status — active (live
 * on chain), pending (not included yet), failed (reverted, refused or dropped: never a session),
 * superseded, revoked, revoke_failed — with the transaction or the reason.
 */
function sessionList(sessions) {
  return h(
    'ul',
    { class: 'plain agent-sessions' },
    sessions.map((s) =>
      h(
        'li',
        { 'data-account': s.account, 'data-status': s.status },
        h('span', { class: 'mono' }, s.account),
        ' ',
        badge(s.status),
        s.accountKind === 'erc7579'
          ? h('span', { class: 'small block session-kind' }, `ERC-7579 account${s.lane !== null && s.lane !== undefined ? `, lane ${s.lane}` : ''}`)
          : null,
        s.revokeTransactionHash
          ? h('span', { class: 'small block' }, `revoked in ${short(s.revokeTransactionHash)}`)
          : s.transactionHash && s.status !== 'failed'
            ? h('span', { class: 'small block' }, `granted in ${short(s.transactionHash)}`)
            : null,
        s.error ? h('span', { class: 'small block' }, s.error) : null,
      ),
    ),
  );
}

/** What the agent may call on one target, in words. */
function describeTarget(t) {
  if (t.anySelector) return 'any function';
  if (!t.selectors.length) return 'plain transfers only';
  return t.selectors.map(describeSelector).join(', ');
}

/** A token cap in base units, with its whole-token value for the usual decimals. */
function describeCap(cap) {
  const c = BigInt(cap);
  const whole = [18, 6].find((d) => c % 10n ** BigInt(d) === 0n && c > 0n);
  return `${c} base units${whole ? ` (${fromBaseUnits(c, whole)} at ${whole} decimals)` : ''}`;
}

/** One address per item: `0x… — what`. */
function addressList(items, cls) {
  return h(
    'ul',
    { class: `plain ${cls}` },
    items.map(([addr, what]) => h('li', {}, h('span', { class: 'mono' }, addr), ` — ${what}`)),
  );
}

/**
 * The agent panel's facts about a session: everything granted. A session recorded before
 * grants carried functions, tokens and a gas cap lists its addresses and spend cap only.
 */
function sessionFacts(s) {
  const detailed = Array.isArray(s.targetPermissions);
  const targets = detailed
    ? addressList(s.targetPermissions.map((t) => [t.target, describeTarget(t)]), 'session-targets')
    : h('span', { class: 'mono pre session-targets' }, s.targets.join('\n'));
  const tokens = s.tokens || [];
  return [
    ['Session targets', s.targetPermissions && !s.targetPermissions.length ? 'none (tokens only)' : targets, null, true],
    detailed && [
      'ERC-20 caps',
      tokens.length ? addressList(tokens.map((t) => [t.token, `cap ${describeCap(t.cap)}`]), 'session-tokens') : 'none',
      null,
      true,
    ],
    ['Spend cap', s.spendCap ? `${weiToEth(s.spendCap)} ETH` : '—', 'session-spend-cap'],
    ['Gas budget', s.gasCap ? `${weiToEth(s.gasCap)} ETH` : 'not recorded', 'session-gas-cap'],
    s.period !== null && s.period !== undefined && ['Periodic budget', s.period ? periodicBudget(s) : 'none', 'session-period'],
    detailed && ['Usage limit', s.maxOps ? `${s.maxOps} operation${s.maxOps === 1 ? '' : 's'}` : 'no limit', 'session-max-ops'],
    detailed && ['Paymaster', s.paymaster || 'none: the account pays gas', s.paymaster ? 'mono session-paymaster' : 'session-paymaster'],
    ['Valid', `${fmtTime(s.validAfter)} → ${s.validUntil ? fmtTime(s.validUntil) : 'no end'}`],
    s.transactionHash && ['Granted in', s.transactionHash, 'mono'],
  ];
}

// ------------------------------------------------------------------ the grant form

const MAX_TARGETS = 64;
const MAX_SELECTORS = 32;
const MAX_TOKENS = 16;
const U128 = 2n ** 128n;
const U96 = 2n ** 96n;
const MIN_PERIOD = 60;
const MAX_U32 = 4294967295;
const ZERO_ADDRESS = /^0x0{40}$/;
let tokenRowSeq = 0;

/** Adds an ERC-20 cap row (token address, cap in whole tokens, decimals). */
function addTokenRow(focus) {
  const n = ++tokenRowSeq;
  const id = (f) => `grant-token-${n}-${f}`;
  const address = h('input', { id: id('address'), class: 'token-address', autocomplete: 'off', spellcheck: 'false', placeholder: '0x…' });
  const cap = h('input', { id: id('cap'), class: 'token-cap', inputmode: 'decimal', autocomplete: 'off', placeholder: 'e.g. 100' });
  const decimals = h('input', { id: id('decimals'), class: 'token-decimals', inputmode: 'numeric', autocomplete: 'off', value: '18' });
  const title = h('p', { id: id('h'), class: 'token-h' });
  const remove = h('button', { type: 'button', class: 'secondary' }, 'Remove');
  const row = h(
    'div',
    { class: 'token-row', role: 'group', 'aria-labelledby': title.id },
    title,
    h(
      'div',
      { class: 'token-fields' },
      h('div', { class: 'token-field-address' }, h('label', { for: address.id }, 'Token address'), address),
      h('div', {}, h('label', { for: cap.id }, 'Cap (whole tokens)'), cap),
      h('div', { class: 'token-field-decimals' }, h('label', { for: decimals.id }, 'Decimals'), decimals),
      h('div', { class: 'token-field-remove' }, remove),
    ),
  );
  remove.addEventListener('click', () => {
    const next = row.nextElementSibling || row.previousElementSibling;
    row.remove();
    renumberTokenRows();
    (next ? next.querySelector('input') : $('grant-token-add')).focus();
  });
  $('grant-tokens').append(row);
  renumberTokenRows();
  if (focus) address.focus();
}

function renumberTokenRows() {
  const rows = [...$('grant-tokens').children];
  rows.forEach((row, i) => {
    row.querySelector('.token-h').textContent = `Token ${i + 1}`;
    row.querySelector('button').setAttribute('aria-label', `Remove token ${i + 1}`);
  });
  $('grant-token-add').disabled = rows.length >= MAX_TOKENS;
}

/**
 * The targets textarea → the API's `targets`: one target per line, `0xADDR` (plain transfers),
 * `0xADDR: f(…), 0x12345678` (those functions) or `0xADDR: *` (any function). A line without a
 * colon may hold several addresses. Throws a field error naming the line.
 */
function parseTargets(text) {
  const out = [];
  const seen = new Map(); // lowercase address → line
  const add = (n, target, spec) => {
    if (!isAddress(target)) throw fieldError('grant-targets', `Line ${n}: “${target}” is not a 20-byte address (0x and 40 hex digits).`);
    const key = target.toLowerCase();
    if (seen.has(key)) throw fieldError('grant-targets', `Line ${n}: ${target} is already listed on line ${seen.get(key)}.`);
    seen.set(key, n);
    out.push({ target, ...spec });
  };
  text.split('\n').forEach((raw, i) => {
    const n = i + 1;
    const line = raw.trim();
    if (!line) return;
    const colon = line.indexOf(':');
    if (colon < 0) {
      for (const a of line.split(/[\s,]+/).filter(Boolean)) add(n, a, { anySelector: false, selectors: [] });
      return;
    }
    const target = line.slice(0, colon).trim();
    const fns = splitFunctions(line.slice(colon + 1));
    if (!fns.length) {
      throw fieldError('grant-targets', `Line ${n}: list functions after the colon, or * for any function (an address alone allows plain transfers only).`);
    }
    if (fns.includes('*')) {
      if (fns.length > 1) throw fieldError('grant-targets', `Line ${n}: * (any function) cannot be combined with a list of functions.`);
      add(n, target, { anySelector: true, selectors: [] });
      return;
    }
    if (fns.length > MAX_SELECTORS) throw fieldError('grant-targets', `Line ${n}: at most ${MAX_SELECTORS} functions per target.`);
    const keys = new Set();
    const selectors = fns.map((f) => {
      const p = parseFunction(f);
      if (!p) {
        throw fieldError('grant-targets', `Line ${n}: “${f}” is not a function: write a signature like transfer(address,uint256) or a 4-byte selector like 0xa9059cbb.`);
      }
      if (keys.has(p.key)) throw fieldError('grant-targets', `Line ${n}: ${f} is listed twice.`);
      keys.add(p.key);
      return p.value;
    });
    add(n, target, { anySelector: false, selectors });
  });
  if (out.length > MAX_TARGETS) throw fieldError('grant-targets', `At most ${MAX_TARGETS} targets.`);
  return out;
}

/** The ERC-20 cap rows → the API's `tokens` (rows left empty are ignored). */
function parseTokens(targets) {
  const out = [];
  const seen = new Set();
  [...$('grant-tokens').children].forEach((row, i) => {
    const name = `Token ${i + 1}`;
    const [address, cap, decimals] = ['.token-address', '.token-cap', '.token-decimals'].map((c) => row.querySelector(c));
    const token = address.value.trim();
    if (!token && !cap.value.trim()) return;
    if (!isAddress(token)) throw fieldError(address.id, `${name}: “${token}” is not a 20-byte address (0x and 40 hex digits).`);
    if (seen.has(token.toLowerCase())) throw fieldError(address.id, `${name}: ${token} already has a cap.`);
    seen.add(token.toLowerCase());
    const any = targets.find((t) => t.anySelector && t.target.toLowerCase() === token.toLowerCase());
    if (any) {
      throw fieldError(address.id, `${name}: ${token} is a target with * (any function): its other functions would move tokens uncounted. List its functions instead.`);
    }
    if (!/^\d{1,3}$/.test(decimals.value.trim()) || Number(decimals.value) > 255) {
      throw fieldError(decimals.id, `${name}: decimals must be a whole number from 0 to 255 (most tokens have 18; USDC has 6).`);
    }
    let units;
    try {
      units = toBaseUnits(cap.value, decimals.value);
    } catch (e) {
      throw fieldError(cap.id, `${name}: ${e.message}.`);
    }
    if (units === 0n) throw fieldError(cap.id, `${name}: the cap must be more than 0 (remove the row instead).`);
    if (units >= U128) throw fieldError(cap.id, `${name}: the cap is too large (at most 2^128 − 1 base units).`);
    out.push({ token, cap: units.toString() });
  });
  return out;
}

/** The grant form → the session fields of `/kms/agent-sessions` (validated, exact amounts). */
function grantPayload() {
  const parsed = parseTargets($('grant-targets').value);
  const tokens = parseTokens(parsed);
  if (!parsed.length && !tokens.length) throw fieldError('grant-targets', 'Enter at least one target (or an ERC-20 cap).');
  // Plain addresses stay strings (transfers only); the others say what they allow.
  const targets = parsed.map((t) => {
    if (t.anySelector) return { target: t.target, anySelector: true };
    return t.selectors.length ? { target: t.target, selectors: t.selectors } : t.target;
  });
  let spendCap;
  try {
    spendCap = ethToWei($('grant-cap').value);
  } catch (e) {
    throw fieldError('grant-cap', `Spend cap: ${e.message}.`);
  }
  let gasCap;
  try {
    gasCap = ethToWei($('grant-gas').value, U96);
  } catch (e) {
    throw fieldError('grant-gas', `Gas budget: ${e.message}.`);
  }
  const maxOpsText = $('grant-max-ops').value.trim();
  let maxOps;
  if (maxOpsText) {
    maxOps = Number(maxOpsText);
    if (!/^\d+$/.test(maxOpsText) || maxOps < 1 || maxOps > 4294967295) {
      throw fieldError('grant-max-ops', 'Usage limit: a whole number of operations from 1 to 4294967295, or empty for no limit.');
    }
  }
  const { period, periodCap } = parsePeriodicBudget();
  let validAfter;
  let validUntil;
  try {
    validAfter = fromLocalInput($('grant-from').value);
  } catch (e) {
    throw fieldError('grant-from', e.message);
  }
  try {
    validUntil = fromLocalInput($('grant-until').value);
  } catch (e) {
    throw fieldError('grant-until', e.message);
  }
  if (validUntil <= validAfter) throw fieldError('grant-until', 'The session must end after it starts.');
  if (validUntil <= Date.now() / 1000) throw fieldError('grant-until', 'The session would already be over.');
  const paymaster = $('grant-paymaster').value.trim();
  if (paymaster && !isAddress(paymaster)) throw fieldError('grant-paymaster', `Paymaster: “${paymaster}” is not a 20-byte address.`);
  if (paymaster && ZERO_ADDRESS.test(paymaster)) throw fieldError('grant-paymaster', 'Paymaster: not the zero address (leave it empty for none).');
  if (gasCap === '0' && !paymaster) {
    throw fieldError('grant-gas', 'Gas budget: with 0 the agent can act only through a paymaster. Enter a budget, or a paymaster.');
  }
  const payload = { targets, spendCap, gasCap, validAfter, validUntil };
  if (tokens.length) payload.tokens = tokens;
  if (paymaster) payload.paymaster = paymaster;
  if (maxOps) payload.maxOps = maxOps;
  if (period) {
    payload.period = period;
    payload.periodCap = periodCap;
  }
  return payload;
}

/**
 * The periodic budget fields → `{period, periodCap}` (seconds and decimal wei; `{period: 0}` when
 * there is none): both or neither, a period of at least a minute, a cap above 0.
 */
function parsePeriodicBudget() {
  const choice = $('grant-period').value;
  const capText = $('grant-period-cap').value.trim();
  let period = 0;
  if (choice === 'custom') {
    const t = $('grant-period-secs').value.trim();
    if (!/^\d+$/.test(t) || Number(t) < MIN_PERIOD || Number(t) > MAX_U32) {
      throw fieldError('grant-period-secs', `Period length: a whole number of seconds from ${MIN_PERIOD} (a minute) to ${MAX_U32}.`);
    }
    period = Number(t);
  } else if (choice) {
    period = Number(choice);
  }
  if (!period) {
    if (capText) throw fieldError('grant-period', 'Periodic budget: choose a period for the cap per period, or leave the cap empty.');
    return { period: 0 };
  }
  if (!capText) throw fieldError('grant-period-cap', `Cap per period: enter the most ETH per ${describePeriod(period)}, or choose no period.`);
  let periodCap;
  try {
    periodCap = ethToWei(capText);
  } catch (e) {
    throw fieldError('grant-period-cap', `Cap per period: ${e.message}.`);
  }
  if (periodCap === '0') throw fieldError('grant-period-cap', 'Cap per period: more than 0 (or choose no period).');
  return { period, periodCap };
}

/** Shows the seconds field only for a period other than an hour, a day or a week. */
function syncPeriodChoice() {
  const custom = $('grant-period').value === 'custom';
  $('grant-period-secs-field').hidden = !custom;
}

async function grantSession(ev) {
  ev.preventDefault();
  const found = findAgent(state.selected);
  if (!found) return;
  const a = found.agent;
  await run('Grant session', $('grant-submit'), async () => {
    const payload = grantPayload();
    let begin;
    let webAuthn;
    try {
      ({ begin, webAuthn } = await ceremony(
        a.keyId,
        'GrantSession',
        payload,
        'Confirm with your passkey to sign the session’s UserOperation…',
        reviewGrant,
      ));
    } catch (e) {
      if (e && e.cancelled) {
        setStatus('Grant cancelled: nothing was signed.');
        return;
      }
      throw e;
    }
    const op = begin.UserOperation || {};
    setStatus(
      `Submitting the UserOperation${op.userOpHash ? ` ${short(op.userOpHash)}` : ''} and waiting for it to be included…`,
    );
    let status;
    let body;
    try {
      ({ status, body } = await api.post('/kms/agent-sessions', {
        keyId: a.keyId,
        ...payload,
        webAuthnAssertion: webAuthn,
      }));
    } catch (e) {
      if (op.account) {
        e.hint = `Smart account ${op.account}${op.deploysAccount ? ' (deployed by this operation)' : ''}: it pays the gas of the session's UserOperation, so it needs ETH.`;
      }
      throw e;
    }
    showGrantResult(body, status);
    await loadWallets();
    $('grant-result').focus();
    setStatus(
      body.status === 'included'
        ? `Session granted on-chain for agent ${a.keyId}.`
        : `Session submitted for agent ${a.keyId}; not yet included.`,
    );
  });
}

/**
 * Shows the grant's UserOperation as the companion built it (account, calls, nonce, gas, fees, most it
 * can cost, userOpHash) and waits for the owner: resolves on “Approve with passkey”, throws on “Cancel”.
 */
function reviewGrant(begin) {
  const u = begin.UserOperation || {};
  const op = u.userOp || {};
  const num = (x) => (x == null ? '' : BigInt(x).toString());
  const calls = (u.calls || []).map((c, i) => [
    `Call ${i + 1}`,
    `${c.to} · ${weiToEth(BigInt(c.value || 0))} ETH · ${(c.data || '0x').slice(0, 10)}… (${Math.max(0, ((c.data || '0x').length - 2) / 2)} bytes)`,
    'mono',
  ]);
  $('grant-review-facts').replaceChildren(
    facts([
      ['Smart account', u.account, 'mono'],
      ['Deploys the account', u.deploysAccount ? 'yes' : 'no'],
      ['EntryPoint', `${u.entryPoint} (${u.entryPointVersion || ''}, chain ${u.chainId})`, 'mono'],
      ...calls,
      ['Nonce', num(op.nonce), 'mono'],
      ['Gas limits', `verification ${num(op.verificationGasLimit)} · call ${num(op.callGasLimit)} · pre-verification ${num(op.preVerificationGas)}`],
      ['Fees per gas', `max ${weiToGwei(op.maxFeePerGas || 0)} gwei · priority ${weiToGwei(op.maxPriorityFeePerGas || 0)} gwei`],
      ['Most it can cost', u.maxGasCost != null ? `${weiToEth(BigInt(u.maxGasCost))} ETH (paid by the account)` : ''],
      ['UserOperation hash', u.userOpHash, 'mono'],
    ]),
  );
  const panel = $('grant-review');
  panel.setAttribute('tabindex', '-1');
  panel.hidden = false;
  panel.focus();
  setStatus('Review the operation, then approve it with your passkey or cancel.');
  return new Promise((resolve, reject) => {
    const done = (ok) => {
      panel.hidden = true;
      $('grant-approve').onclick = null;
      $('grant-cancel').onclick = null;
      if (ok) {
        resolve();
      } else {
        const e = new Error('Cancelled: nothing was signed.');
        e.cancelled = true;
        reject(e);
      }
    };
    $('grant-approve').onclick = () => done(true);
    $('grant-cancel').onclick = () => done(false);
  });
}

function showGrantResult(r, httpStatus) {
  const el = $('grant-result');
  el.setAttribute('tabindex', '-1');
  const included = r.status === 'included';
  el.className = `result ${included ? 'ok' : 'pending'}`;
  el.replaceChildren(
    h('p', { class: 'result-title' }, included ? 'Session granted on-chain.' : `Submitted (HTTP ${httpStatus}); waiting for inclusion.`),
    facts([
      ['Status', badge(r.status)],
      ['Smart account', r.account, 'mono'],
      ['UserOperation', r.userOpHash, 'mono'],
      ['Transaction', r.transactionHash, 'mono'],
      ['Deployed the account', r.deploysAccount ? 'yes' : 'no'],
    ]),
  );
  el.hidden = false;
}

/**
 * What the revocation did: always the companion and the TEE; on-chain for each account where the
 * agent had a session (`sessions`; older companions answer `onChain` alone).
 */
function showRevokeResult(r) {
  const el = $('revoke-result');
  const chains = Array.isArray(r.sessions) ? r.sessions : r.onChain ? [r.onChain] : [];
  const failed = chains.some((c) => c.status === 'failed');
  el.className = `result ${failed ? 'bad' : 'ok'}`;
  el.replaceChildren(
    h(
      'p',
      { class: 'result-title' },
      failed
        ? 'Revoked in the companion and the TEE. An on-chain revocation FAILED: that session is still registered on the SessionKeyValidator (revoke again to retry).'
        : 'Revoked: the credential is dead in the companion and the TEE.',
    ),
    facts([
      ['Credential', 'revoked'],
      ...chains.flatMap((chain) => [
        ['On-chain session', badge(chain.status)],
        ['Smart account', chain.account, 'mono'],
        chain.transactionHash && ['Revocation transaction', chain.transactionHash, 'mono'],
        chain.error && ['Error', chain.error],
      ]),
      !chains.length && ['On-chain session', 'none granted, nothing to revoke'],
    ]),
  );
  el.setAttribute('role', failed ? 'alert' : 'status');
  el.hidden = false;
}

function showRevokeConfirm() {
  $('revoke-row').hidden = true;
  $('revoke-confirm').hidden = false;
  $('revoke-no').focus();
}

function hideRevokeConfirm() {
  $('revoke-confirm').hidden = true;
  $('revoke-row').hidden = false;
  $('revoke').focus();
}

async function revokeAgent() {
  const found = findAgent(state.selected);
  if (!found) return;
  const a = found.agent;
  await run('Revoke agent', $('revoke-yes'), async () => {
    const { webAuthn } = await ceremony(a.keyId, 'RevokeAgentCredential', {}, 'Confirm with your passkey to revoke the agent…');
    setStatus('Revoking…');
    const { body } = await api.post('/kms/revoke-agent-credential', { keyId: a.keyId, webAuthnAssertion: webAuthn });
    await loadWallets();
    showRevokeResult(body || {});
    const chains = body && Array.isArray(body.sessions) ? body.sessions : body && body.onChain ? [body.onChain] : [];
    if (chains.some((c) => c.status === 'failed')) {
      setStatus(`Agent ${a.keyId} revoked in the companion and the TEE, but NOT on-chain on every account.`);
    } else {
      const where = chains.length > 1 ? ` on ${chains.length} accounts` : '';
      setStatus(`Agent ${a.keyId} revoked${chains.length ? ` (also on-chain${where})` : ''}.`);
    }
    $('agent-h').focus();
  });
}

// ------------------------------------------------------------------ intents

function stopPolling() {
  if (state.poll) clearTimeout(state.poll);
  state.poll = null;
}

function callsSummary(calls) {
  if (!Array.isArray(calls) || !calls.length) return '—';
  let total = 0n;
  const to = [];
  for (const c of calls) {
    if (c && typeof c.to === 'string') to.push(short(c.to));
    try {
      if (c && c.value !== undefined && c.value !== null) total += BigInt(c.value);
    } catch {
      // An unparsable value is shown without a total.
    }
  }
  const n = `${calls.length} call${calls.length === 1 ? '' : 's'}`;
  return `${n}${to.length ? ` to ${[...new Set(to)].join(', ')}` : ''}${total ? ` · ${weiToEth(total)} ETH` : ''}`;
}

function renderIntents(intents) {
  const el = $('intents');
  if (!intents.length) {
    el.replaceChildren(h('p', { class: 'hint' }, 'No intents from this agent yet.'));
    return;
  }
  const cols = ['Submitted', 'UserOperation', 'Status', 'Calls', 'Transaction', 'Error'];
  el.replaceChildren(
    h(
      'div',
      { class: 'table-wrap' },
      h(
        'table',
        { class: 'intents' },
        h('caption', { class: 'sr-only' }, 'Recent intents of this agent, newest first'),
        h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col' }, c)))),
        h(
          'tbody',
          {},
          intents.map((i) =>
            h(
              'tr',
              { 'data-user-op-hash': i.userOpHash, 'data-status': i.status },
              h('td', { 'data-label': 'Submitted' }, fmtTime(i.createdAt)),
              h('td', { 'data-label': 'UserOperation', class: 'mono', title: i.userOpHash }, short(i.userOpHash)),
              h(
                'td',
                { 'data-label': 'Status', title: i.evidence ? JSON.stringify(i.evidence) : null },
                badge(i.status),
                i.statusReason ? h('span', { class: 'hint status-reason' }, ` ${i.statusReason.replace(/_/g, ' ')}`) : null,
              ),
              h('td', { 'data-label': 'Calls' }, callsSummary(i.calls)),
              h('td', { 'data-label': 'Transaction', class: 'mono', title: i.transactionHash || null }, i.transactionHash ? short(i.transactionHash) : '—'),
              h('td', { 'data-label': 'Error' }, i.error || '—'),
            ),
          ),
        ),
      ),
    ),
  );
}

async function loadIntents() {
  stopPolling();
  const keyId = state.selected;
  if (!keyId) return;
  const el = $('intents');
  el.setAttribute('aria-busy', 'true');
  try {
    const { body } = await api.post('/kms/list-agent-intents', { keyId, limit: 20 });
    if (state.selected !== keyId) return;
    renderIntents(body.intents);
    if (body.intents.some((i) => i.status === 'signed' || i.status === 'pending')) {
      state.poll = setTimeout(loadIntents, 5000);
    }
  } catch (e) {
    if (state.selected !== keyId) return;
    const code = e instanceof api.ApiError ? ` (code: ${e.code}${e.status ? ` · HTTP ${e.status}` : ''})` : '';
    el.replaceChildren(h('p', { class: 'error-text', role: 'alert' }, `Could not load the intents: ${e.message}${code}`));
  } finally {
    el.removeAttribute('aria-busy');
  }
}

// ------------------------------------------------------------------ start

function wire() {
  $('api-key-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const k = $('api-key').value.trim();
    if (!k && state.mode !== 'open') {
      showError(fieldError('api-key', 'Paste the API key first.'), 'Set API key');
      return;
    }
    api.setApiKey(k);
    $('api-key').value = '';
    state.keyEditing = false;
    await run('Load wallets', ev.submitter, loadWallets);
    if (!$('notice').hidden) return;
    renderKeyState();
    setStatus(`${state.wallets.length} wallet${state.wallets.length === 1 ? '' : 's'} loaded.`);
  });
  $('api-key-change').addEventListener('click', () => {
    state.keyEditing = true;
    renderKeyState();
    $('api-key').focus();
  });
  $('api-key-forget').addEventListener('click', () => {
    api.setApiKey('');
    state.keyEditing = false;
    renderKeyState();
    state.wallets = [];
    state.selected = null;
    stopPolling();
    panel.hidden = true;
    $('agent-home').append(panel);
    if (state.mode !== 'open') $('api-key').focus();
    $('wallets').replaceChildren(h('p', { class: 'hint' }, 'Enter an API key to see the wallets.'));
    setStatus('API key forgotten.');
  });
  $('register-form').addEventListener('submit', register);
  $('refresh').addEventListener('click', (ev) =>
    run('Refresh', ev.currentTarget, async () => {
      await loadWallets();
      setStatus('Up to date.');
      if (state.selected) loadIntents();
    }),
  );
  $('notice-close').addEventListener('click', clearError);
  $('jwt-copy').addEventListener('click', copyCredential);
  $('jwt-done').addEventListener('click', () => {
    hideCredential();
    setStatus('Credential hidden.');
    $('wallets-h').setAttribute('tabindex', '-1');
    $('wallets-h').focus();
  });
  $('agent-close').addEventListener('click', closeAgent);
  $('grant-form').addEventListener('submit', grantSession);
  $('grant-token-add').addEventListener('click', () => addTokenRow(true));
  $('grant-period').addEventListener('change', syncPeriodChoice);
  $('revoke').addEventListener('click', showRevokeConfirm);
  $('revoke-no').addEventListener('click', hideRevokeConfirm);
  $('revoke-yes').addEventListener('click', revokeAgent);
  $('intents-refresh').addEventListener('click', loadIntents);
  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && !$('revoke-confirm').hidden) hideRevokeConfirm();
  });
  // Never leave a credential in a page kept in the back/forward cache.
  window.addEventListener('pagehide', hideCredential);
}

async function start() {
  wire();
  resetGrantForm();
  await checkHealth();
  renderKeyState();
  if (api.apiKey() || state.mode === 'open') {
    await run('Load wallets', null, loadWallets);
    if ($('notice').hidden) setStatus('');
  }
}

start();
