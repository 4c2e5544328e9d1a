// Small, exact helpers: addresses, amounts ↔ base units (BigInt, never floats), function
// selectors, times.

const WEI = 10n ** 18n;

export function isAddress(s) {
  return /^0x[0-9a-fA-F]{40}$/.test(s);
}

/**
 * An amount in whole units with `decimals` decimals → base units, exactly (BigInt, no floats):
 * ("1.5", 6) → 1500000n. Throws, with a message for people, on anything else.
 */
export function toBaseUnits(s, decimals, unit = 'tokens') {
  const ds = String(decimals).trim();
  const d = Number(ds);
  if (!/^\d{1,3}$/.test(ds) || d > 255) throw new Error('Decimals must be a whole number from 0 to 255');
  const t = String(s).trim();
  if (!/^(\d+(\.\d*)?|\.\d+)$/.test(t)) throw new Error(`Enter an amount in ${unit}, e.g. 0.5`);
  const [int, rawFrac = ''] = t.split('.');
  const frac = rawFrac.replace(/0+$/, '');
  if (frac.length > d) throw new Error(`At most ${d} decimal${d === 1 ? '' : 's'} in ${unit}`);
  return BigInt(int || '0') * 10n ** BigInt(d) + BigInt(frac.padEnd(d, '0') || '0');
}

/** "1.5" → "1500000000000000000" (decimal wei), below `limit` wei. Throws on anything else. */
export function ethToWei(s, limit = 2n ** 128n) {
  const wei = toBaseUnits(s, 18, 'ETH');
  if (wei >= limit) throw new Error('The amount is too large');
  return wei.toString();
}

/** Decimal wei → "1.5" (exact). */
/** Wei → gwei as an exact decimal string (fees per gas read better in gwei). */
export function weiToGwei(wei) {
  const w = BigInt(wei);
  const g = 10n ** 9n;
  const frac = (w % g).toString().padStart(9, '0').replace(/0+$/, '');
  return frac ? `${w / g}.${frac}` : `${w / g}`;
}

export function weiToEth(wei) {
  const w = BigInt(wei);
  const int = w / WEI;
  const frac = (w % WEI).toString().padStart(18, '0').replace(/0+$/, '');
  return frac ? `${int}.${frac}` : `${int}`;
}

/**
 * A budget period's length in words: 3600 → "hour", 86400 → "day", 604800 → "week",
 * 172800 → "2 days", 5400 → "90 minutes", 75 → "75 seconds" (the largest of week, day, hour,
 * minute that divides it; else seconds).
 */
export function describePeriod(secs) {
  const s = Number(secs);
  for (const [len, unit] of [[604800, 'week'], [86400, 'day'], [3600, 'hour'], [60, 'minute']]) {
    if (s > 0 && s % len === 0) {
      const n = s / len;
      return n === 1 ? unit : `${n} ${unit}s`;
    }
  }
  return `${s} second${s === 1 ? '' : 's'}`;
}

/** Base units (decimal string or BigInt) → whole units with `decimals` decimals (exact). */
export function fromBaseUnits(units, decimals) {
  const u = BigInt(units);
  const one = 10n ** BigInt(decimals);
  const frac = decimals ? (u % one).toString().padStart(decimals, '0').replace(/0+$/, '') : '';
  return frac ? `${u / one}.${frac}` : `${u / one}`;
}

// Function selectors: well-known ERC-20 functions by signature and by selector.
const KNOWN = {
  'transfer(address,uint256)': '0xa9059cbb',
  'approve(address,uint256)': '0x095ea7b3',
  'increaseAllowance(address,uint256)': '0x39509351',
  'transferFrom(address,address,uint256)': '0x23b872dd',
};
const KNOWN_BY_SELECTOR = Object.fromEntries(Object.entries(KNOWN).map(([sig, sel]) => [sel, sig]));

/**
 * A function as the grant API takes it: a 4-byte selector (`0xa9059cbb`) or a signature
 * (`transfer(address,uint256)`, spaces ignored). Returns `{value, key}`: what to send, and a
 * key that is equal for the same function written either way (for the well-known ones) or
 * `null` when `s` is neither.
 */
export function parseFunction(s) {
  const t = String(s).trim();
  if (/^0[xX][0-9a-fA-F]{8}$/.test(t)) {
    const hex = `0x${t.slice(2).toLowerCase()}`;
    return { value: hex, key: hex };
  }
  const sig = t.replace(/\s+/g, '');
  if (/^[A-Za-z0-9_$]+\([A-Za-z0-9(),[\]]*\)$/.test(sig)) return { value: sig, key: KNOWN[sig] || sig };
  return null;
}

/** A selector as people read it: `0xa9059cbb` → `transfer(address,uint256)` when well known. */
export function describeSelector(sel) {
  const s = String(sel).toLowerCase();
  return KNOWN_BY_SELECTOR[s] || s;
}

/** Splits `a(b,c), d` at the commas outside parentheses: ["a(b,c)", "d"]. */
export function splitFunctions(s) {
  const out = [];
  let depth = 0;
  let cur = '';
  for (const ch of s) {
    if (ch === '(') depth++;
    else if (ch === ')') depth = Math.max(0, depth - 1);
    if ((ch === ',' || ch === ';') && depth === 0) {
      out.push(cur);
      cur = '';
    } else {
      cur += ch;
    }
  }
  out.push(cur);
  return out.map((x) => x.trim()).filter(Boolean);
}

/** 0x1234…abcd */
export function short(hex) {
  if (typeof hex !== 'string') return '';
  return hex.length > 18 ? `${hex.slice(0, 10)}…${hex.slice(-6)}` : hex;
}

const fmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

/** Unix seconds → a local date and time. */
export function fmtTime(unix) {
  if (unix === null || unix === undefined || unix === 0) return '—';
  return fmt.format(new Date(Number(unix) * 1000));
}

/** A Date → the value of an `<input type="datetime-local">` (local time, minutes). */
export function toLocalInput(d) {
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

/** The value of an `<input type="datetime-local">` → unix seconds (local time). */
export function fromLocalInput(v) {
  const ms = new Date(v).getTime();
  if (!Number.isFinite(ms)) throw new Error('Enter a date and time');
  return Math.floor(ms / 1000);
}
