// Small, exact helpers: addresses, ETH ↔ wei (BigInt, never floats), times.

const WEI = 10n ** 18n;

export function isAddress(s) {
  return /^0x[0-9a-fA-F]{40}$/.test(s);
}

/** "1.5" → "1500000000000000000" (decimal wei). Throws on anything else. */
export function ethToWei(s) {
  const t = String(s).trim();
  if (!/^(\d+(\.\d*)?|\.\d+)$/.test(t)) throw new Error('Enter an amount in ETH, e.g. 0.5');
  const [int, frac = ''] = t.split('.');
  if (frac.length > 18) throw new Error('ETH has at most 18 decimals');
  const wei = BigInt(int || '0') * WEI + BigInt((frac + '0'.repeat(18)).slice(0, 18));
  if (wei >= 2n ** 128n) throw new Error('The cap is too large');
  return wei.toString();
}

/** Decimal wei → "1.5" (exact). */
export function weiToEth(wei) {
  const w = BigInt(wei);
  const int = w / WEI;
  const frac = (w % WEI).toString().padStart(18, '0').replace(/0+$/, '');
  return frac ? `${int}.${frac}` : `${int}`;
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
