// Drives the companion's /ui page in headless Chromium (Debian's chromium)
// with a virtual WebAuthn authenticator (CDP WebAuthn domain): wrong API key
// (visible error), register a passkey and create a wallet, create an agent
// (JWT shown once: a 3-part HS256 JWT whose claims match the agent shown, not
// stored, not logged, gone once hidden), keyboard-only agent creation, grant
// a session on-chain with a periodic budget (or, without a chain, a visible
// refusal), see the agent's intents, approve a dapp's ERC-7715 request (the
// answer carries the credential, as ticked), revoke (and the revoked JWT refused by
// the API), narrow layout. Screenshots go to $ARTIFACTS_DIR (default ./artifacts).
//
// Environment:
//   UI_ORIGIN       http://localhost:<port> of the companion (required; rp id localhost)
//   KMS_API_KEY     an API key of that companion (required)
//   CHROMIUM        browser binary [default: /usr/bin/chromium]
//   ARTIFACTS_DIR   where screenshots and result.json go [default: ./artifacts]
//   GRANT_TARGET    when set, grant a session with this target and expect it included on-chain
//   TEST_TOKEN      with GRANT_TARGET: an ERC-20 on that chain (functions listed and capped)
//   INTENT_TO       when set (with GRANT_TARGET), submit an intent as the agent to this address
//   INTENT_WEI      its value in wei [default: 1000]
//   DOCS_SCREENSHOT when set, also write the README screenshot to this path

import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

const ORIGIN = process.env.UI_ORIGIN;
const API_KEY = process.env.KMS_API_KEY;
if (!ORIGIN || !API_KEY) {
  console.error('UI_ORIGIN and KMS_API_KEY are required');
  process.exit(2);
}
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = path.resolve(process.env.ARTIFACTS_DIR || 'artifacts');
const GRANT_TARGET = process.env.GRANT_TARGET || '';
const TEST_TOKEN = process.env.TEST_TOKEN || '';
const INTENT_TO = process.env.INTENT_TO || '';
const INTENT_WEI = process.env.INTENT_WEI || '1000';
const DOCS_SCREENSHOT = process.env.DOCS_SCREENSHOT || '';
const RPC_URL = process.env.RPC_URL || '';
const ACCOUNT_FACTORY = process.env.ACCOUNT_FACTORY || '';
if (GRANT_TARGET && (!RPC_URL || !ACCOUNT_FACTORY || !TEST_TOKEN)) {
  console.error('GRANT_TARGET needs RPC_URL, ACCOUNT_FACTORY and TEST_TOKEN (anvil)');
  process.exit(2);
}
fs.mkdirSync(ARTIFACTS, { recursive: true });

const result = { steps: [] };
const step = (name) => {
  result.steps.push(name);
  console.log(`--> ${name}`);
};

function b64uJson(part) {
  assert.match(part, /^[A-Za-z0-9_-]+$/, 'JWT parts are base64url without padding');
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
}

async function shot(page, name, opts = {}) {
  const file = path.join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true, ...opts });
  return file;
}

async function api(pathname, body, headers = {}) {
  const r = await fetch(new URL(pathname, ORIGIN), {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  const text = await r.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: r.status, body: json };
}

/** Fails unless `loc` is (at least partly) inside the viewport. */
async function assertInView(page, loc, what) {
  const box = await loc.boundingBox();
  const vp = page.viewportSize();
  assert.ok(box && box.y < vp.height && box.y + box.height > 0, `${what}: ${JSON.stringify(box)} in ${JSON.stringify(vp)}`);
}

/** JSON-RPC to anvil. */
async function rpc(method, params) {
  const r = await fetch(RPC_URL, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
  });
  const j = await r.json();
  if (j.error) throw new Error(`${method}: ${JSON.stringify(j.error)}`);
  return j.result;
}

/** AgentAccountFactory.getAddress(owner, salt 0): the owner's counterfactual account. */
async function predictedAccount(owner) {
  // 0x8cb84e18 = bytes4(keccak256("getAddress(address,uint256)"))
  const data = `0x8cb84e18${owner.slice(2).toLowerCase().padStart(64, '0')}${'0'.repeat(64)}`;
  const ret = await rpc('eth_call', [{ to: ACCOUNT_FACTORY, data }, 'latest']);
  assert.match(ret, /^0x[0-9a-f]{64}$/);
  return `0x${ret.slice(-40)}`;
}

// Playwright gives every launch a fresh, empty profile directory (and refuses
// --user-data-dir in args), so no state leaks between runs.
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});

const consoleLines = [];
const pageErrors = [];
let failed = false;
try {
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 }, locale: 'en-GB', timezoneId: 'UTC' });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: ORIGIN });
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  // Record CSP violations (an init script runs outside the page's CSP).
  await page.addInitScript(() => {
    window.__csp = [];
    document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
  });

  step('virtual authenticator (ctap2, internal, resident key, UV)');
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport: 'internal',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });

  step('open /ui: headers, title, health');
  const resp = await page.goto(`${ORIGIN}/ui`);
  assert.equal(resp.status(), 200);
  const h = resp.headers();
  assert.match(h['content-type'], /^text\/html/);
  const csp = h['content-security-policy'];
  assert.ok(csp, 'a Content-Security-Policy header');
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'self'(;|$)/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|https?:/);
  assert.equal(h['x-content-type-options'], 'nosniff');
  assert.equal(await page.title(), 'Agent Key Companion');
  await page.locator('#health.ok').waitFor();
  const js = await page.request.get(`${ORIGIN}/ui/app.js`);
  assert.match(js.headers()['content-type'], /^text\/javascript/);
  const css = await page.request.get(`${ORIGIN}/ui/style.css`);
  assert.match(css.headers()['content-type'], /^text\/css/);

  step('accessibility basics: every control has a label');
  const unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll('input, textarea, select, button')]
      .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby') && !el.textContent.trim())
      .map((el) => el.id || el.outerHTML.slice(0, 60)),
  );
  assert.deepEqual(unlabelled, []);

  step('a wrong API key: the API error is shown');
  await page.getByLabel('API key, sent as x-api-key').fill('kms_nope_0000');
  await page.getByRole('button', { name: 'Use this key' }).click();
  const notice = page.locator('#notice');
  await notice.waitFor({ state: 'visible' });
  assert.match(await page.locator('#notice-code').textContent(), /code: api_key_invalid · HTTP 401/);
  assert.match(await page.locator('#notice-title').textContent(), /Load wallets failed/);
  await shot(page, '01-api-key-error');

  step('the right API key (kept in sessionStorage only)');
  await page.getByLabel('API key, sent as x-api-key').fill(API_KEY);
  await page.getByRole('button', { name: 'Use this key' }).click();
  await page.locator('#status').filter({ hasText: /\d+ wallets? loaded\./ }).waitFor();
  assert.ok(await notice.isHidden(), 'the error is cleared');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('kms.apiKey')), API_KEY);
  assert.equal(await page.evaluate(() => localStorage.length), 0);
  assert.equal(await page.locator('#api-key').inputValue(), '', 'the field is cleared');
  await page.locator('#api-key-set').filter({ hasText: /A key is set for this tab \(kms_[0-9a-f]+_…\)/ }).waitFor();
  assert.ok(await page.locator('#api-key-form').isHidden(), 'the key form folds away once the key works');

  step('register a passkey and create a wallet');
  const walletName = `Agents wallet ${Math.random().toString(36).slice(2, 6)}`;
  await page.getByLabel('Description').fill(walletName);
  await page.getByRole('button', { name: 'Register a passkey and create a wallet' }).click();
  const wallet = page.locator('article.wallet').filter({ has: page.getByRole('heading', { name: walletName }) });
  await wallet.waitFor();
  const walletId = await wallet.getAttribute('data-wallet-id');
  assert.match(walletId, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  const owner = (await wallet.locator('.owner-address').textContent()).trim();
  assert.match(owner, /^0x[0-9a-fA-F]{40}$/);
  assert.match(await page.locator('#status').textContent(), new RegExp(`Wallet created: owner address ${owner}`));
  const creds = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
  assert.equal(creds.credentials.length, 1, 'one passkey in the authenticator');
  assert.equal(creds.credentials[0].rpId, 'localhost');
  assert.equal(await wallet.getByText('No agents yet.').count(), 1);
  await shot(page, '02-wallet');
  result.walletId = walletId;
  result.owner = owner;

  step('create an agent: the JWT is shown once');
  await wallet.getByLabel('Agent label').fill('trading-bot');
  await wallet.getByLabel('Credential lifetime (hours, 1–72)').fill('24');
  await wallet.getByRole('button', { name: 'Create agent' }).click();
  const credSection = page.locator('#credential-section');
  await credSection.waitFor({ state: 'visible' });
  assert.match(await credSection.locator('.warning').textContent(), /Shown only once/);
  const jwt = (await page.locator('#jwt').textContent()).trim();
  const parts = jwt.split('.');
  assert.equal(parts.length, 3, 'a JWT has three parts');
  const header = b64uJson(parts[0]);
  const claims = b64uJson(parts[1]);
  assert.match(parts[2], /^[A-Za-z0-9_-]{43}$/, 'an HS256 MAC is 32 bytes');
  assert.equal(header.alg, 'HS256');
  assert.equal(header.typ, 'JWT');
  assert.ok(header.kid, 'kid');
  const credKeyId = (await credSection.locator('.cred-key-id').textContent()).trim();
  const credAddress = (await credSection.locator('.cred-address').textContent()).trim();
  // The agent as the wallet's table shows it.
  const row = wallet.locator(`tr[data-key-id="${credKeyId}"]`);
  await row.waitFor();
  assert.equal(await row.getAttribute('data-status'), 'active');
  const rowAddress = (await row.locator('.agent-address').textContent()).trim();
  assert.equal(claims.sub, credKeyId, 'sub is the agent key id shown');
  assert.equal(claims.wallet_id, walletId);
  assert.equal(`${walletId}:${claims.agent_index}`, credKeyId);
  assert.equal(claims.agent_address.toLowerCase(), rowAddress.toLowerCase(), 'agent_address is the address shown');
  assert.equal(credAddress.toLowerCase(), rowAddress.toLowerCase());
  assert.equal(claims.exp - claims.iat, 24 * 3600, 'the lifetime asked for');
  assert.equal(typeof claims.gen, 'number');
  assert.match(await row.textContent(), /trading-bot/);
  result.agentKeyId = credKeyId;
  result.agentAddress = rowAddress;

  step('copy button puts exactly the JWT on the clipboard');
  await page.getByRole('button', { name: 'Copy credential' }).click();
  await page.getByText('Copied to the clipboard.').waitFor();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), jwt);
  // The credential is masked in the artefact: screenshots are kept, secrets are not.
  await shot(page, '03-agent-credential', { mask: [page.locator('#jwt')] });

  step('the JWT is not stored or logged anywhere');
  const stored = await page.evaluate(() => JSON.stringify({ s: { ...sessionStorage }, l: { ...localStorage }, c: document.cookie, u: location.href, t: document.title }));
  assert.ok(!stored.includes(jwt) && !stored.includes(parts[2]), 'not in storage, cookies, URL or title');
  assert.ok(!consoleLines.some((l) => l.includes(parts[2])), 'not in the console');
  assert.equal((await page.content()).split(parts[2]).length - 1, 1, 'in the DOM exactly once');

  step('hide it: gone from the page');
  await page.getByRole('button', { name: 'I have saved it — hide it' }).click();
  await credSection.waitFor({ state: 'hidden' });
  assert.ok(!(await page.content()).includes(parts[2]), 'no trace of the JWT in the DOM');

  step('keyboard only: a second agent, created with Enter');
  const label2 = wallet.getByLabel('Agent label');
  await label2.focus();
  await page.keyboard.type('keyboard-bot');
  await page.keyboard.press('Enter');
  await credSection.waitFor({ state: 'visible' });
  const keyId2 = (await credSection.locator('.cred-key-id').textContent()).trim();
  assert.notEqual(keyId2, credKeyId);
  assert.equal(await page.evaluate(() => document.activeElement.id), 'credential-h', 'focus moves to the credential');
  await page.getByRole('button', { name: 'I have saved it — hide it' }).click();
  assert.equal(await wallet.locator('tr[data-key-id]').count(), 2);

  step('manage the first agent');
  await row.getByRole('button', { name: 'Manage agent trading-bot' }).click();
  const panel = page.locator('#agent-section');
  await panel.waitFor({ state: 'visible' });
  assert.equal((await page.locator('#agent-h').textContent()).trim(), 'Agent “trading-bot”');
  await panel.getByText('No intents from this agent yet.').waitFor();

  step('the page converts amounts exactly (BigInt, no floating point)');
  const exact = await page.evaluate(async () => {
    const m = await import('/ui/eth.js');
    const err = (f) => {
      try {
        return String(f());
      } catch (e) {
        return `error: ${e.message}`;
      }
    };
    return {
      usdc: String(m.toBaseUnits('1.5', 6)),
      hundred: String(m.toBaseUnits('100', 18)),
      tiny: String(m.toBaseUnits('0.000000000000000001', 18)),
      long: String(m.toBaseUnits('123456789012345678.123456789012345678', 18)),
      zeros: String(m.toBaseUnits('2.500', 1)),
      tooPrecise: err(() => m.toBaseUnits('0.1234567', 6)),
      gas: m.ethToWei('0.01'),
      gasTooBig: err(() => m.ethToWei('79228162514.264337593543950336', 2n ** 96n)),
      back: m.fromBaseUnits('123456789012345678123456789012345678', 18),
      selector: JSON.stringify(m.parseFunction(' transfer(address, uint256) ')),
      split: JSON.stringify(m.splitFunctions('transfer(address,uint256), 0x12345678; f((uint8,address)[])')),
      periods: [3600, 86400, 604800, 172800, 5400, 75].map(m.describePeriod).join(', '),
    };
  });
  assert.deepEqual(exact, {
    usdc: '1500000',
    hundred: '100000000000000000000',
    tiny: '1',
    long: '123456789012345678123456789012345678',
    zeros: '25',
    tooPrecise: 'error: At most 6 decimals in tokens',
    gas: '10000000000000000',
    gasTooBig: 'error: The amount is too large',
    back: '123456789012345678.123456789012345678',
    selector: JSON.stringify({ value: 'transfer(address,uint256)', key: '0xa9059cbb' }),
    split: JSON.stringify(['transfer(address,uint256)', '0x12345678', 'f((uint8,address)[])']),
    periods: 'hour, day, week, 2 days, 90 minutes, 75 seconds',
  });

  step('grant a session: invalid input is refused in the page');
  const targetsField = panel.getByLabel('Allowed targets and functions (one target per line)');
  /** Submits the grant form and expects the page's own error, on field `id`. */
  const refused = async (message, id) => {
    await panel.getByRole('button', { name: 'Grant session' }).click();
    await notice.waitFor({ state: 'visible' });
    assert.match(await page.locator('#notice-text').textContent(), message);
    assert.equal(await page.locator(`#${id}`).getAttribute('aria-invalid'), 'true', `${id} marked invalid`);
    assert.equal(await page.evaluate(() => document.activeElement.id), id, `focus on ${id}`);
    assert.equal(await page.locator('#notice-code').textContent(), '', 'no API call: nothing to show but the message');
  };
  await targetsField.fill('0x1234');
  await refused(/Line 1: “0x1234” is not a 20-byte address/, 'grant-targets');
  await assertInView(page, notice, 'the validation error is in view');
  const DEAD = '0x000000000000000000000000000000000000dEaD';
  await targetsField.fill(`${DEAD}: transfer(address,uint256), frobnicate`);
  await refused(/Line 1: “frobnicate” is not a function: write a signature like transfer\(address,uint256\) or a 4-byte selector/, 'grant-targets');
  await targetsField.fill(`${DEAD}: transfer(address, uint256), 0xA9059CBB`);
  await refused(/Line 1: 0xA9059CBB is listed twice/, 'grant-targets');
  await targetsField.fill(`${DEAD}: *, approve(address,uint256)`);
  await refused(/Line 1: \* \(any function\) cannot be combined/, 'grant-targets');
  await targetsField.fill(`${DEAD}\n\n${DEAD.toLowerCase()}: *`);
  await refused(/Line 3: .* is already listed on line 1/i, 'grant-targets');
  await targetsField.fill(DEAD);
  const gasField = panel.getByLabel('Gas budget (ETH)');
  assert.equal(await gasField.inputValue(), '0.01', 'a gas budget is proposed');
  await gasField.fill('');
  await refused(/Gas budget: Enter an amount in ETH/, 'grant-gas');
  await gasField.fill('0');
  await refused(/with 0 the agent can act only through a paymaster/, 'grant-gas');
  await gasField.fill('0.01');
  await panel.getByLabel('Usage limit (optional)').fill('0');
  await refused(/Usage limit: a whole number of operations from 1/, 'grant-max-ops');
  await panel.getByLabel('Usage limit (optional)').fill('');
  await panel.getByLabel('Paymaster (optional)').fill(`0x${'0'.repeat(40)}`);
  await refused(/Paymaster: not the zero address/, 'grant-paymaster');
  await panel.getByLabel('Paymaster (optional)').fill('');
  // The periodic budget: both or neither, a period of at least a minute, a cap above 0.
  const periodChoice = panel.getByLabel('Period', { exact: true });
  const periodCap = panel.getByLabel('Cap per period (ETH)');
  const periodSecs = panel.getByLabel('Period length (seconds)');
  assert.equal(await periodChoice.inputValue(), '', 'no periodic budget by default');
  assert.ok(await periodSecs.isHidden(), 'the seconds field only for another period');
  await periodChoice.selectOption({ label: 'Day' });
  await refused(/Cap per period: enter the most ETH per day, or choose no period/, 'grant-period-cap');
  await periodCap.fill('0');
  await refused(/Cap per period: more than 0/, 'grant-period-cap');
  await periodCap.fill('0.1.2');
  await refused(/Cap per period: Enter an amount in ETH/, 'grant-period-cap');
  await periodCap.fill('0.0000000000000000001');
  await refused(/Cap per period: At most 18 decimals in ETH/, 'grant-period-cap');
  await periodCap.fill('0.1');
  await periodChoice.selectOption({ label: 'None' });
  await refused(/Periodic budget: choose a period for the cap per period, or leave the cap empty/, 'grant-period');
  await periodChoice.selectOption({ label: 'Other (seconds)' });
  await periodSecs.waitFor({ state: 'visible' });
  await periodSecs.fill('59');
  await refused(/Period length: a whole number of seconds from 60 \(a minute\)/, 'grant-period-secs');
  await periodSecs.fill('4294967296');
  await refused(/Period length: a whole number of seconds from 60/, 'grant-period-secs');
  await periodSecs.fill('');
  await refused(/Period length: a whole number of seconds from 60/, 'grant-period-secs');
  await periodChoice.selectOption({ label: 'None' });
  assert.ok(await periodSecs.isHidden());
  await periodCap.fill('');
  await panel.getByRole('button', { name: 'Add an ERC-20 cap' }).click();
  const tokenRow = panel.locator('.token-row').first();
  assert.equal(await page.evaluate(() => document.activeElement.className), 'token-address', 'focus on the new row');
  const tokenAddress = await tokenRow.getByLabel('Token address').getAttribute('id');
  const tokenCap = await tokenRow.getByLabel('Cap (whole tokens)').getAttribute('id');
  assert.equal(await tokenRow.getByLabel('Decimals').inputValue(), '18', 'decimals default to 18');
  await tokenRow.getByLabel('Token address').fill('0xnot-a-token');
  await tokenRow.getByLabel('Cap (whole tokens)').fill('5');
  await refused(/Token 1: “0xnot-a-token” is not a 20-byte address/, tokenAddress);
  await tokenRow.getByLabel('Token address').fill(DEAD);
  await tokenRow.getByLabel('Cap (whole tokens)').fill('0');
  await refused(/Token 1: the cap must be more than 0/, tokenCap);
  await tokenRow.getByLabel('Cap (whole tokens)').fill('0.5');
  await tokenRow.getByLabel('Decimals').fill('0');
  await refused(/Token 1: At most 0 decimals in tokens/, tokenCap);
  await tokenRow.getByLabel('Decimals').fill('18');
  await targetsField.fill(`${DEAD}: *`);
  await refused(/Token 1: .* is a target with \* \(any function\)/, tokenAddress);
  await panel.getByRole('button', { name: 'Add an ERC-20 cap' }).click();
  await panel.locator('.token-row').nth(1).getByLabel('Token address').fill(DEAD.toLowerCase());
  await panel.locator('.token-row').nth(1).getByLabel('Cap (whole tokens)').fill('1');
  await targetsField.fill(DEAD);
  await refused(/Token 2: .* already has a cap/i, await panel.locator('.token-row').nth(1).getByLabel('Token address').getAttribute('id'));
  // Rows can be removed; the form is left with no token caps.
  await panel.getByRole('button', { name: 'Remove token 2' }).click();
  await panel.getByRole('button', { name: 'Remove token 1' }).click();
  assert.equal(await panel.locator('.token-row').count(), 0);
  assert.equal(await page.evaluate(() => document.activeElement.id), 'grant-token-add', 'focus back on the add button');
  await shot(page, '04a-grant-form-checks');

  if (GRANT_TARGET) {
    step('fund the owner\'s counterfactual account (it pays the gas) and the operator (the revoker) on anvil');
    const predicted = await predictedAccount(owner);
    await rpc('anvil_setBalance', [predicted, '0x8ac7230489e80000']); // 10 ETH
    const op = await fetch(new URL('/kms/operator', ORIGIN), { headers: { 'x-api-key': API_KEY } });
    assert.equal(op.status, 200);
    const operator = (await op.json()).address;
    assert.match(operator, /^0x[0-9a-fA-F]{40}$/);
    await rpc('anvil_setBalance', [operator, '0xde0b6b3a7640000']); // 1 ETH
    result.predictedAccount = predicted;

    step('grant a session on-chain: plain transfers, listed functions, a token cap, gas and usage limits, a periodic budget');
    // mint(address,uint256) is 0x40c10f19; 0x095ea7b3 is approve(address,uint256).
    await targetsField.fill(`${GRANT_TARGET}\n${TEST_TOKEN}: mint(address, uint256), 0x095ea7b3`);
    await panel.getByLabel('Spend cap (ETH)').fill('0.5');
    await panel.getByLabel('Gas budget (ETH)').fill('0.05');
    await panel.getByLabel('Usage limit (optional)').fill('10');
    await periodChoice.selectOption({ label: 'Day' });
    await periodCap.fill('0.2');
    await panel.getByRole('button', { name: 'Add an ERC-20 cap' }).click();
    await panel.locator('.token-row').getByLabel('Token address').fill(TEST_TOKEN);
    await panel.locator('.token-row').getByLabel('Cap (whole tokens)').fill('100');
    // The operation is shown before the passkey is asked for; cancelling signs nothing.
    const review = page.locator('#grant-review');
    let sent = 0;
    const countGrants = (r) => {
      if (r.url().endsWith('/kms/agent-sessions')) sent += 1;
    };
    page.on('request', countGrants);
    await panel.getByRole('button', { name: 'Grant session' }).click();
    await review.waitFor({ state: 'visible', timeout: 60_000 });
    const shown = await review.textContent();
    assert.ok(shown.toLowerCase().includes(predicted.toLowerCase()), `the account is shown: ${shown}`);
    assert.match(shown, /Most it can cost[\s\S]*ETH \(paid by the account\)/);
    assert.match(shown, /Nonce/);
    assert.match(shown, /0x[0-9a-fA-F]{64}/, 'the userOpHash is shown');
    await shot(page, '04b-grant-review');
    await review.getByRole('button', { name: 'Cancel' }).click();
    await page.locator('#status', { hasText: 'Grant cancelled: nothing was signed.' }).waitFor({ timeout: 10_000 });
    assert.ok(await review.isHidden());
    assert.equal(sent, 0, 'a cancelled grant sends nothing');
    page.off('request', countGrants);

    const granting = page.waitForRequest((r) => r.url().endsWith('/kms/agent-sessions') && r.method() === 'POST');
    await panel.getByRole('button', { name: 'Grant session' }).click();
    await review.waitFor({ state: 'visible', timeout: 60_000 });
    await review.getByRole('button', { name: 'Approve with passkey' }).click();
    const grantBody = JSON.parse((await granting).postData());
    assert.equal(grantBody.period, 86400, 'a day, in seconds');
    assert.equal(grantBody.periodCap, '200000000000000000', '0.2 ETH, exactly');
    const res = page.locator('#grant-result');
    await res.waitFor({ state: 'visible', timeout: 120_000 });
    assert.ok(await notice.isHidden(), `no error: ${await page.locator('#notice-text').textContent()}`);
    assert.match(await res.textContent(), /Session granted on-chain\./);
    const facts = await res.locator('dd').allTextContents();
    const account = facts.find((t) => /^0x[0-9a-fA-F]{40}$/.test(t.trim()));
    const hashes = facts.filter((t) => /^0x[0-9a-fA-F]{64}$/.test(t.trim()));
    assert.ok(account, 'the smart account is shown');
    assert.equal(account.trim().toLowerCase(), predicted, 'the account is the factory\'s counterfactual address');
    assert.ok(hashes.length >= 2, 'the userOpHash and the transaction hash are shown');
    await row.locator('.agent-session').filter({ hasText: '0.5 ETH · 0.2 ETH per day · until' }).waitFor();
    result.account = account.trim();
    result.userOpHash = hashes[0].trim();
    result.transactionHash = hashes[1].trim();
    const receipt = await rpc('eth_getTransactionReceipt', [result.transactionHash]);
    assert.equal(receipt.status, '0x1', 'the bundle transaction succeeded on anvil');
    assert.notEqual(await rpc('eth_getCode', [result.account, 'latest']), '0x', 'the account is deployed');
    await wallet.locator('.smart-account').filter({ hasText: new RegExp(result.account, 'i') }).waitFor();

    step('the agent panel shows the session as granted');
    const agentFacts = panel.locator('#agent-facts');
    const targetItems = (await agentFacts.locator('.session-targets li').allTextContents()).map((t) => t.trim());
    // Addresses as the API lists them (checksummed): compared without case.
    assert.deepEqual(
      targetItems.map((t) => t.toLowerCase()),
      [`${GRANT_TARGET} — plain transfers only`, `${TEST_TOKEN} — 0x40c10f19, approve(address,uint256)`].map((t) => t.toLowerCase()),
    );
    const tokenItems = (await agentFacts.locator('.session-tokens li').allTextContents()).map((t) => t.trim());
    assert.equal(tokenItems.length, 1, JSON.stringify(tokenItems));
    assert.equal(tokenItems[0].toLowerCase(), `${TEST_TOKEN} — cap 100000000000000000000 base units (100 at 18 decimals)`.toLowerCase());
    assert.equal((await agentFacts.locator('.session-spend-cap').textContent()).trim(), '0.5 ETH');
    assert.equal((await agentFacts.locator('.session-gas-cap').textContent()).trim(), '0.05 ETH');
    assert.equal((await agentFacts.locator('.session-max-ops').textContent()).trim(), '10 operations');
    assert.equal((await agentFacts.locator('.session-period').textContent()).trim(), '0.2 ETH per day');
    const listed = await api('/kms/list-agent-keys', { humanKeyId: walletId }, { 'x-api-key': API_KEY });
    const listedSession = listed.body.agentKeys.find((k) => k.keyId === credKeyId).session;
    assert.equal(listedSession.period, 86400, JSON.stringify(listedSession));
    assert.equal(listedSession.periodCap, '200000000000000000');
    assert.equal((await agentFacts.locator('.session-paymaster').textContent()).trim(), 'none: the account pays gas');
    await shot(page, '04-session-granted');

    if (INTENT_TO) {
      step('the agent submits an intent; the page shows it and its status');
      const r = await api(
        '/agent/intents',
        { keyId: credKeyId, calls: [{ to: INTENT_TO, value: INTENT_WEI, data: '0x' }] },
        { authorization: `Bearer ${jwt}` },
      );
      assert.ok(r.status === 200 || r.status === 202, `intent accepted: ${r.status} ${JSON.stringify(r.body)}`);
      result.intent = r.body;
      await panel.getByRole('button', { name: 'Refresh intents' }).click();
      const irow = panel.locator('table.intents tbody tr').first();
      await irow.waitFor();
      // Included within a few polls (Alto bundles at once on anvil).
      await panel.locator('table.intents tbody tr[data-status="included"]').first().waitFor({ timeout: 60_000 });
      assert.match(await irow.textContent(), /1 call to 0x/);
      assert.equal(await irow.getAttribute('data-user-op-hash'), r.body.userOpHash);
      const bal = await rpc('eth_getBalance', [INTENT_TO, 'latest']);
      assert.equal(BigInt(bal), BigInt(INTENT_WEI), 'the target received exactly the intent\'s value');
      await shot(page, '05-intents');
    }

    step('a dapp asks with wallet_grantPermissions (ERC-7715); the page lists it; the owner approves with the passkey');
    const expiry = Math.floor(Date.now() / 1000) + 86_400;
    const asked = api(
      `/rpc?address=${owner}`,
      {
        jsonrpc: '2.0',
        id: 77,
        method: 'wallet_grantPermissions',
        params: [{
          expiry,
          permissions: [{
            type: 'native-token-transfer',
            data: { ticker: 'ETH', recipients: [GRANT_TARGET] },
            policies: [
              { type: 'token-allowance', data: { allowance: '0x2386f26fc10000' } }, // 0.01 ETH
              { type: 'gas-limit', data: { limit: '0x11c37937e08000' } }, // 0.005 ETH
            ],
            required: true,
          }],
        }],
      },
      { 'x-api-key': API_KEY },
    );
    const card = page.locator('#permreq-list article.permreq');
    await card.first().waitFor({ timeout: 20_000 });
    const cardText = await card.first().textContent();
    assert.match(cardText, /Spend cap\s*0\.01 ETH/, cardText);
    assert.match(cardText, /Gas budget\s*0\.005 ETH/, cardText);
    assert.ok(cardText.toLowerCase().includes(`${GRANT_TARGET.toLowerCase()}: plain transfers`), cardText);
    await shot(page, '05a-erc7715-request');
    await card.first().locator('.permreq-hand').check();
    await card.first().getByRole('button', { name: 'Approve with passkey' }).click();
    const answered = await asked;
    assert.equal(answered.status, 200);
    const granted = answered.body.result;
    assert.ok(granted, `the dapp is answered: ${JSON.stringify(answered.body)}`);
    assert.equal(granted.expiry, expiry);
    assert.equal(granted.signerData.submitToAddress.toLowerCase(), result.account.toLowerCase());
    assert.match(granted.signerData.credential, /^[\w-]+\.[\w-]+\.[\w-]+$/, 'handed to the requester, as ticked');
    await page.locator('#permreq-status', { hasText: 'handed to the requester' }).waitFor({ timeout: 30_000 });
    assert.ok(await page.locator('#credential-section').isHidden(), 'the credential went to the dapp, not the page');
    result.erc7715 = { keyId: granted.signerData.keyId, account: granted.signerData.submitToAddress };
    await shot(page, '05b-erc7715-approved');
  } else {
    step('grant a session without a chain: the API refusal is shown');
    await targetsField.fill(`${DEAD}\n0x000000000000000000000000000000000000bEEF: transfer(address,uint256)`);
    await panel.getByRole('button', { name: 'Add an ERC-20 cap' }).click();
    await panel.locator('.token-row').getByLabel('Token address').fill(DEAD);
    await panel.locator('.token-row').getByLabel('Cap (whole tokens)').fill('1.5');
    await panel.locator('.token-row').getByLabel('Decimals').fill('6');
    // A period of 30 minutes given in seconds, 0.05 ETH each: what the page asks the passkey for.
    await periodChoice.selectOption({ label: 'Other (seconds)' });
    await periodSecs.fill('1800');
    await periodCap.fill('0.05');
    const asking = page.waitForRequest((r) => r.url().endsWith('/BeginAuthentication') && r.method() === 'POST');
    await panel.getByRole('button', { name: 'Grant session' }).click();
    const asked = JSON.parse((await asking).postData());
    assert.equal(asked.Purpose, 'GrantSession');
    assert.equal(asked.Payload.period, 1800);
    assert.equal(asked.Payload.periodCap, '50000000000000000', '0.05 ETH, exactly');
    assert.deepEqual(asked.Payload.tokens, [{ token: DEAD, cap: '1500000' }]);
    await notice.waitFor({ state: 'visible' });
    assert.match(await page.locator('#notice-title').textContent(), /Grant session failed/);
    await assertInView(page, notice, 'the error is in view where the action was started');
    assert.match(await page.locator('#notice-code').textContent(), /code: \S+ · HTTP (4|5)\d\d/);
    assert.ok(await page.locator('#notice-details').isHidden(), 'an empty `details` is not shown');
    await shot(page, '04-session-refused');
  }

  if (DOCS_SCREENSHOT) {
    // The README's picture: the wallet, its agents and the open agent panel (no credential on it).
    if (await notice.isVisible()) await page.getByRole('button', { name: 'Dismiss the error' }).click();
    assert.ok(!(await page.content()).includes(parts[2]));
    await page.evaluate(() => {
      document.getElementById('status').textContent = '';
    });
    await page.setViewportSize({ width: 1000, height: 900 });
    await wallet.screenshot({ path: DOCS_SCREENSHOT });
    await page.setViewportSize({ width: 1200, height: 900 });
  }

  step('revoke the agent');
  await panel.getByRole('button', { name: 'Revoke this agent…' }).click();
  await panel.getByRole('button', { name: 'Yes, revoke' }).click();
  await wallet.locator(`tr[data-key-id="${credKeyId}"][data-status="revoked"]`).waitFor();
  assert.equal((await row.locator('.agent-status').textContent()).trim(), 'revoked');
  assert.ok(await panel.getByRole('button', { name: 'Revoked' }).isDisabled());
  assert.ok(await page.locator('#grant-form').isHidden(), 'no grant form for a revoked agent');
  await panel.getByText('Only an active agent can be given a session.').waitFor();
  assert.match(await page.locator('#status').textContent(), /revoked/);
  const revokeResult = panel.locator('#revoke-result');
  await revokeResult.waitFor({ state: 'visible' });
  if (GRANT_TARGET) {
    assert.match(await page.locator('#status').textContent(), /also on-chain/);
    assert.match(await revokeResult.textContent(), /On-chain session\s*revoked/);
    const tx = (await revokeResult.locator('dd').allTextContents()).map((t) => t.trim()).find((t) => /^0x[0-9a-fA-F]{64}$/.test(t));
    assert.ok(tx, 'the revocation transaction is shown');
    assert.equal((await rpc('eth_getTransactionReceipt', [tx])).status, '0x1', 'the revocation transaction succeeded');
  } else {
    assert.match(await revokeResult.textContent(), /none granted, nothing to revoke/);
  }
  const other = wallet.locator(`tr[data-key-id="${keyId2}"]`);
  assert.equal(await other.getAttribute('data-status'), 'active', 'the other agent is untouched');
  await shot(page, '06-revoked');

  step('the revoked credential is refused by the API');
  const signed = await api(
    '/kms/sign-agent',
    { keyId: credKeyId, payload: `0x${'11'.repeat(32)}`, accountAddress: `0x${'22'.repeat(20)}` },
    { authorization: `Bearer ${jwt}` },
  );
  assert.equal(signed.status, 401, JSON.stringify(signed.body));
  assert.match(signed.body.code, /revoked/);
  if (INTENT_TO) {
    const refused = await api(
      '/agent/intents',
      { keyId: credKeyId, calls: [{ to: INTENT_TO, value: INTENT_WEI, data: '0x' }] },
      { authorization: `Bearer ${jwt}` },
    );
    assert.equal(refused.status, 401, JSON.stringify(refused.body));
  }

  step('reload: the key is remembered for the tab; the state comes back from the API');
  await page.reload();
  await wallet.locator(`tr[data-key-id="${credKeyId}"][data-status="revoked"]`).waitFor();
  assert.ok(!(await page.content()).includes(parts[2]));

  step('narrow screen (390 px): no horizontal scrolling');
  await page.setViewportSize({ width: 390, height: 844 });
  await row.getByRole('button', { name: 'Manage agent trading-bot' }).click();
  await panel.waitFor({ state: 'visible' });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `page wider than the screen by ${overflow}px`);
  await shot(page, '07-narrow');
  // The grant form of the other (active) agent, with a token cap row, fits too.
  await other.getByRole('button', { name: 'Manage agent keyboard-bot' }).click();
  await page.locator('#grant-form').waitFor({ state: 'visible' });
  await panel.getByRole('button', { name: 'Add an ERC-20 cap' }).click();
  await periodChoice.selectOption({ label: 'Other (seconds)' });
  await periodSecs.waitFor({ state: 'visible' });
  const formOverflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(formOverflow <= 0, `the grant form is wider than the screen by ${formOverflow}px`);
  await shot(page, '07b-narrow-grant-form');

  step('no CSP violations, no page errors, nothing logged but failed requests');
  assert.deepEqual(await page.evaluate(() => window.__csp), []);
  assert.deepEqual(pageErrors, []);
  // Registration offers ES256 only (the one algorithm the TA verifies, #15 item 7): Chromium
  // advises RS256 as well, with a warning that is expected here.
  const es256Only = /^warning: publicKey\.pubKeyCredParams is missing at least one of the default algorithm identifiers: ES256 and RS256\./;
  const unexpected = consoleLines.filter(
    (l) => !/^error: Failed to load resource: the server responded with a status of (400|401|404|422|503)/.test(l) && !es256Only.test(l),
  );
  assert.deepEqual(unexpected, []);
  assert.ok(!consoleLines.some((l) => l.includes(parts[0] + '.' + parts[1])), 'no JWT in the console');

  await context.close();
  result.ok = true;
} catch (e) {
  failed = true;
  console.error(`FAILED: ${e && e.stack ? e.stack : e}`);
  console.error('--- browser console ---');
  for (const l of consoleLines) console.error(l);
  for (const l of pageErrors) console.error(`pageerror: ${l}`);
  try {
    const pages = browser.contexts().flatMap((c) => c.pages());
    if (pages[0]) await pages[0].screenshot({ path: path.join(ARTIFACTS, 'failure.png'), fullPage: true });
  } catch {
    // The browser may be gone.
  }
} finally {
  await browser.close();
  fs.writeFileSync(path.join(ARTIFACTS, 'result.json'), JSON.stringify({ ...result, ok: !failed }, null, 2));
}
if (failed) process.exit(1);
console.log(`ui.test: ${result.steps.length} steps passed; screenshots in ${ARTIFACTS}`);
