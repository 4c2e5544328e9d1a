// WebAuthn in the browser for the companion's ceremonies.
//
// The server's options are webauthn-rs JSON: binary fields (challenge,
// user.id, credential ids) are base64url strings. navigator.credentials
// wants ArrayBuffers, and its results are turned back into the JSON shape the
// server reads (the same shape as PublicKeyCredential.toJSON()).

/** base64url (padding optional; standard base64 accepted too) → bytes. */
export function b64uDecode(s) {
  if (typeof s !== 'string') throw new TypeError('expected a base64url string');
  const b64 = s.replace(/-/g, '+').replace(/_/g, '/').replace(/=+$/, '');
  const padded = b64 + '='.repeat((4 - (b64.length % 4)) % 4);
  const bin = atob(padded);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** bytes (ArrayBuffer or view) → base64url without padding. */
export function b64uEncode(buf) {
  const bytes = buf instanceof Uint8Array ? buf : new Uint8Array(buf instanceof ArrayBuffer ? buf : buf.buffer);
  let bin = '';
  for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function descriptors(list) {
  return (list || []).map((c) => {
    const d = { type: c.type || 'public-key', id: b64uDecode(c.id) };
    if (Array.isArray(c.transports)) d.transports = c.transports;
    return d;
  });
}

/** The server's `/BeginRegistration` Options → `PublicKeyCredentialCreationOptions`. */
export function creationOptions(options) {
  const pk = structuredClone(options && options.publicKey ? options.publicKey : options);
  if (!pk || !pk.challenge || !pk.user) throw new Error('the server sent no registration options');
  pk.challenge = b64uDecode(pk.challenge);
  pk.user = { ...pk.user, id: b64uDecode(pk.user.id) };
  if (pk.excludeCredentials) pk.excludeCredentials = descriptors(pk.excludeCredentials);
  return pk;
}

/** The server's `/BeginAuthentication` Options → `PublicKeyCredentialRequestOptions`. */
export function requestOptions(options) {
  const pk = structuredClone(options && options.publicKey ? options.publicKey : options);
  if (!pk || !pk.challenge) throw new Error('the server sent no authentication options');
  pk.challenge = b64uDecode(pk.challenge);
  if (pk.allowCredentials) pk.allowCredentials = descriptors(pk.allowCredentials);
  return pk;
}

function extensions(cred) {
  try {
    return cred.getClientExtensionResults() || {};
  } catch {
    return {};
  }
}

/** A new credential → the JSON `/CompleteRegistration` reads. */
export function registrationJSON(cred) {
  return {
    id: cred.id,
    rawId: b64uEncode(cred.rawId),
    type: cred.type,
    response: {
      attestationObject: b64uEncode(cred.response.attestationObject),
      clientDataJSON: b64uEncode(cred.response.clientDataJSON),
    },
    extensions: extensions(cred),
  };
}

/** An assertion → the JSON a ceremony's `Credential` carries. */
export function assertionJSON(cred) {
  const r = cred.response;
  return {
    id: cred.id,
    rawId: b64uEncode(cred.rawId),
    type: cred.type,
    response: {
      authenticatorData: b64uEncode(r.authenticatorData),
      clientDataJSON: b64uEncode(r.clientDataJSON),
      signature: b64uEncode(r.signature),
      userHandle: r.userHandle && r.userHandle.byteLength ? b64uEncode(r.userHandle) : null,
    },
    extensions: extensions(cred),
  };
}

function supported() {
  if (!window.isSecureContext) {
    throw new Error('Passkeys need a secure context: open this page over https, or on http://localhost.');
  }
  if (!window.PublicKeyCredential || !navigator.credentials) {
    throw new Error('This browser does not support passkeys (WebAuthn).');
  }
}

/** Create a passkey with the server's registration Options; returns its JSON. */
export async function createPasskey(options) {
  supported();
  const cred = await navigator.credentials.create({ publicKey: creationOptions(options) });
  if (!cred) throw new Error('The browser returned no credential.');
  return registrationJSON(cred);
}

/** Assert with the server's authentication Options; returns the JSON. */
export async function assert(options) {
  supported();
  const cred = await navigator.credentials.get({ publicKey: requestOptions(options) });
  if (!cred) throw new Error('The browser returned no assertion.');
  return assertionJSON(cred);
}

/** A readable message for a WebAuthn DOMException. */
export function describeWebAuthnError(e) {
  switch (e && e.name) {
    case 'NotAllowedError':
      return 'The passkey prompt was cancelled, timed out, or not allowed (NotAllowedError).';
    case 'InvalidStateError':
      return 'This authenticator already holds a passkey for this wallet (InvalidStateError).';
    case 'SecurityError':
      return 'The browser refused the passkey for this site: the page origin must match the companion\'s relying party id (SecurityError).';
    case 'NotSupportedError':
      return 'No authenticator supports what the companion asks for (NotSupportedError).';
    case 'AbortError':
      return 'The passkey prompt was aborted (AbortError).';
    default:
      return null;
  }
}
