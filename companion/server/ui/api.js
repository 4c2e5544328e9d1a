// The companion's HTTP API, as any client calls it. The API key lives only
// in this tab's sessionStorage (never localStorage, never a cookie).

const KEY = 'kms.apiKey';

/** An error answered by the API (`{error, code}`) or met on the way. */
export class ApiError extends Error {
  constructor(status, code, message, details = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    // Any other fields of the error body (e.g. the account or userOpHash a chain error is about).
    this.details = details;
  }
}

export function apiKey() {
  try {
    return sessionStorage.getItem(KEY) || '';
  } catch {
    return '';
  }
}

export function setApiKey(k) {
  try {
    if (k) sessionStorage.setItem(KEY, k);
    else sessionStorage.removeItem(KEY);
  } catch {
    // Storage disabled: the key is simply not remembered.
  }
}

async function send(method, path, body, opts = {}) {
  const headers = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const key = apiKey();
  if (opts.apiKey !== false && key) headers['x-api-key'] = key;
  if (opts.target) headers['x-amz-target'] = `TrentService.${opts.target}`;
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'omit',
      cache: 'no-store',
      redirect: 'error',
    });
  } catch (e) {
    throw new ApiError(0, 'network_error', `The companion did not answer (${e.message}).`);
  }
  const text = await resp.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!resp.ok) {
    const code = json && typeof json.code === 'string' ? json.code : `http_${resp.status}`;
    const msg = json && typeof json.error === 'string' ? json.error : text.slice(0, 300) || resp.statusText;
    let details = null;
    if (json && typeof json === 'object' && !Array.isArray(json)) {
      const rest = Object.entries(json).filter(([k]) => k !== 'error' && k !== 'code');
      if (rest.length) details = Object.fromEntries(rest);
    }
    throw new ApiError(resp.status, code, msg, details);
  }
  return { status: resp.status, body: json };
}

/** POST JSON; resolves to `{status, body}`, rejects with ApiError. */
export function post(path, body, opts) {
  return send('POST', path, body ?? {}, opts);
}

/** GET; resolves to `{status, body}` even for 503 health answers. */
export async function health() {
  try {
    return await send('GET', '/health', undefined, { apiKey: false });
  } catch (e) {
    if (e instanceof ApiError && e.status === 503) return { status: 503, body: null };
    throw e;
  }
}
