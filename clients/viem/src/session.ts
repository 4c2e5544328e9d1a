// The pure parts of an agent session on `AgentAccount`: nonce keys, the session signature and its
// gas-estimation stub, the account's callData, and decoding the validator's refusals. Each mirrors
// the Rust implementation named in its comment; test/unit/ checks them against vectors from it.

import {
  type Address,
  type Hex,
  BaseError,
  concat,
  decodeErrorResult,
  decodeFunctionData,
  encodeFunctionData,
  getAddress,
  hexToBigInt,
  isHex,
  numberToHex,
  pad,
  size,
  slice,
} from 'viem'
import { entryPoint07Abi } from 'viem/account-abstraction'

import {
  agentAccountAbi,
  agentAccountErrorsAbi,
  sessionKeyValidatorErrorsAbi,
} from './abi.js'

/** The first byte of a session signature (`SessionKeyValidator.SESSION_MARKER`). */
export const SESSION_MARKER = 0x08
/** The length of a session signature in bytes (`SessionKeyValidator.SESSION_SIGNATURE_LENGTH`). */
export const SESSION_SIGNATURE_LENGTH = 106

const U32_MAX = 0xffff_ffffn
const U16_MAX = 0xffffn

/**
 * The EntryPoint nonce key (192 bits) of an agent's operations on `AgentAccount`:
 * `periodIndex << 160 | agentAddress` — the agent key's own address as a number, with the budget
 * period in the 32 bits above it (0 for a session without a periodic budget).
 * `SessionKeyValidator` refuses an agent's operation under any other key (`NonceLaneNotAllowed`).
 *
 * Rust: `NonceKey::for_agent` / `NonceKey::for_agent_period` (companion/chain/src/nonce.rs).
 */
export function agentNonceKey(agent: Address, periodIndex: bigint | number = 0n): bigint {
  const period = BigInt(periodIndex)
  if (period < 0n || period > U32_MAX)
    throw new RangeError(
      `budget period ${period} does not fit an AgentAccount nonce key (at most ${U32_MAX})`,
    )
  return (period << 160n) | hexToBigInt(getAddress(agent))
}

/**
 * The nonce key of an agent's operations on a third-party ERC-7579 account with
 * `SessionKeyValidator` installed as its validator module: `validator << 32 | lane << 16 |
 * periodIndex` (the account picks the module by the key's top 20 bytes; `lane` is the one the
 * validator gave the key on that account, `getSession(account, key).lane`).
 *
 * Rust: `NonceKey::for_module_lane` (companion/chain/src/nonce.rs). Only the key is provided here:
 * `toAgentSessionAccount` builds `AgentAccount` operations (see the README).
 */
export function moduleNonceKey(
  validator: Address,
  lane: number | bigint,
  periodIndex: bigint | number = 0n,
): bigint {
  const l = BigInt(lane)
  const p = BigInt(periodIndex)
  if (l < 0n || l > U16_MAX) throw new RangeError(`lane ${l} does not fit 16 bits`)
  if (p < 0n || p > U16_MAX)
    throw new RangeError(
      `budget period ${p} does not fit an ERC-7579 nonce key (at most ${U16_MAX})`,
    )
  return (hexToBigInt(getAddress(validator)) << 32n) | (l << 16n) | p
}

/** The full 256-bit nonce of `sequence` under `key`: `key << 64 | sequence`. */
export function nonceOf(key: bigint, sequence: bigint): bigint {
  return (key << 64n) | sequence
}

/** The parts of a session signature. */
export type SessionSignatureParts = {
  /** The account the signature is for (`sig[1:21]`). */
  account: Address
  /** The agent key's address (`sig[21:41]`). */
  agent: Address
  /** `r ‖ s ‖ v` (`sig[41:106]`). */
  rsv: Hex
}

/**
 * The session signature: `0x08 ‖ account (20) ‖ agent (20) ‖ r (32) ‖ s (32) ‖ v (1)`, 106 bytes.
 * `r ‖ s ‖ v` is the agent key's ECDSA signature over the EIP-191 hash of the userOpHash.
 *
 * Rust: `session_signature` (companion/chain/src/signature.rs; layout in
 * proto/src/session_signature.rs).
 */
export function encodeSessionSignature({ account, agent, rsv }: SessionSignatureParts): Hex {
  if (size(rsv) !== 65)
    throw new Error(`an ECDSA signature is 65 bytes (r ‖ s ‖ v), got ${size(rsv)}`)
  return concat([numberToHex(SESSION_MARKER, { size: 1 }), getAddress(account), getAddress(agent), rsv])
}

/** Splits a session signature; `undefined` unless it has the session layout (length and marker). */
export function parseSessionSignature(signature: Hex): SessionSignatureParts | undefined {
  if (!isHex(signature) || size(signature) !== SESSION_SIGNATURE_LENGTH) return undefined
  if (Number(slice(signature, 0, 1)) !== SESSION_MARKER) return undefined
  return {
    account: getAddress(slice(signature, 1, 21)),
    agent: getAddress(slice(signature, 21, 41)),
    rsv: slice(signature, 41, 106),
  }
}

/**
 * The stub session signature for gas estimation (`eth_estimateUserOperationGas`): the final
 * 106-byte layout, naming `account` and `agent`, with `r = 1`, `s = 1` (low) and `v = 27`.
 *
 * Why this shape: `AgentAccount` routes a signature to `SessionKeyValidator` only when it is
 * exactly 106 bytes and starts with `0x08` (anything else is checked as the owner's), and the
 * validator runs the whole session policy for the named key (targets, functions, caps, lane,
 * window) and then `ecrecover`, which for this `r ‖ s ‖ v` returns no key: validation reports a
 * signature failure instead of reverting, after spending what a real signature would. A shorter or
 * differently shaped stub takes another (cheaper) path, so estimation succeeds with too little
 * `verificationGasLimit` and the signed operation then fails (AA26/AA23).
 *
 * Rust: `stub_session_signature` (companion/chain/src/signature.rs).
 */
export function stubSessionSignature(account: Address, agent: Address): Hex {
  const rsv = concat([pad('0x01', { size: 32 }), pad('0x01', { size: 32 }), '0x1b'])
  return encodeSessionSignature({ account, agent, rsv })
}

/** A call of the account: `to`, `value` (wei) and `data`. */
export type AccountCall = { to: Address; value?: bigint | undefined; data?: Hex | undefined }

/**
 * `AgentAccount`'s callData: `execute(to, value, data)` for one call, `executeBatch(Call[])` for
 * several. Rust: `encode_calls` (companion/chain/src/account.rs).
 */
export function encodeAgentAccountCalls(calls: readonly AccountCall[]): Hex {
  if (calls.length === 0) throw new Error('an operation needs at least one call')
  if (calls.length === 1) {
    const [c] = calls
    return encodeFunctionData({
      abi: agentAccountAbi,
      functionName: 'execute',
      args: [c!.to, c!.value ?? 0n, c!.data ?? '0x'],
    })
  }
  return encodeFunctionData({
    abi: agentAccountAbi,
    functionName: 'executeBatch',
    args: [calls.map((c) => ({ target: c.to, value: c.value ?? 0n, data: c.data ?? '0x' }))],
  })
}

/** The calls of an `execute`/`executeBatch` callData. Rust: `decode_calls`. */
export function decodeAgentAccountCalls(data: Hex): AccountCall[] {
  const r = decodeFunctionData({ abi: agentAccountAbi, data })
  if (r.functionName === 'execute') {
    const [to, value, d] = r.args
    return [{ to, value, data: d }]
  }
  return r.args[0].map((c) => ({ to: c.target, value: c.value, data: c.data }))
}

/** A refusal decoded from the revert bytes behind a bundler or EntryPoint error. */
export type DecodedRevert = {
  /** Who defined the error: `SessionKeyValidator`, `AgentAccount` or `EntryPoint`. */
  source: 'SessionKeyValidator' | 'AgentAccount' | 'EntryPoint'
  /** The error's name (`TargetNotAllowed`, `SpendCapExceeded`, …). */
  name: string
  /** Its arguments. */
  args: readonly unknown[]
  /** The EntryPoint's reason (`AA23 reverted`, …) when it came wrapped in `FailedOp(WithRevert)`. */
  entryPointReason?: string | undefined
  /** The innermost error's bytes. */
  data: Hex
}

/** Decodes revert bytes, unwrapping `FailedOpWithRevert`; `undefined` for an unknown error.
 * Rust: `revert::decode` (companion/chain/src/revert.rs). */
export function decodeRevert(data: Hex, entryPointReason?: string, depth = 0): DecodedRevert | undefined {
  if (!isHex(data) || size(data) < 4 || depth > 4) return undefined
  const tries = [
    ['SessionKeyValidator', sessionKeyValidatorErrorsAbi],
    ['AgentAccount', agentAccountErrorsAbi],
    ['EntryPoint', entryPoint07Abi],
  ] as const
  for (const [source, abi] of tries) {
    let r: { errorName: string; args?: readonly unknown[] | undefined }
    try {
      r = decodeErrorResult({ abi, data }) as typeof r
    } catch {
      continue
    }
    if (source === 'EntryPoint') {
      if (r.errorName === 'FailedOpWithRevert') {
        const [, reason, inner] = r.args as [bigint, string, Hex]
        return (
          decodeRevert(inner, reason, depth + 1) ?? {
            source,
            name: r.errorName,
            args: r.args ?? [],
            entryPointReason: reason,
            data,
          }
        )
      }
      if (r.errorName === 'FailedOp') {
        const [, reason] = r.args as [bigint, string]
        return { source, name: r.errorName, args: r.args ?? [], entryPointReason: reason, data }
      }
      if (r.errorName === 'Error' || r.errorName === 'Panic') continue
    }
    return { source, name: r.errorName, args: r.args ?? [], entryPointReason, data }
  }
  return undefined
}

/**
 * The validator's (or the account's, or the EntryPoint's) error behind a failed
 * `sendUserOperation`/`estimateUserOperationGas`: bundlers put the revert bytes in the JSON-RPC
 * error's message or data (Alto: `… AA23 reverted 0x<error>`); this looks through the viem error
 * chain for them. `undefined` when none decodes.
 */
export function decodeSessionError(error: unknown): DecodedRevert | undefined {
  const texts: string[] = []
  const seen = new Set<unknown>()
  const visit = (e: unknown, depth: number): void => {
    if (e == null || depth > 12 || seen.has(e)) return
    seen.add(e)
    if (typeof e === 'string') return void texts.push(e)
    if (typeof e !== 'object') return
    const o = e as Record<string, unknown>
    for (const k of ['data', 'details', 'shortMessage', 'message', 'reason']) {
      const v = o[k]
      if (typeof v === 'string') texts.push(v)
      else if (v && typeof v === 'object') visit(v, depth + 1)
    }
    if (Array.isArray(o.metaMessages)) texts.push(...(o.metaMessages as unknown[]).filter((m): m is string => typeof m === 'string'))
    visit(o.cause, depth + 1)
  }
  visit(error, 0)
  if (error instanceof BaseError) error.walk((e) => (visit(e, 0), false))
  let best: DecodedRevert | undefined
  for (const t of texts) {
    for (const m of t.matchAll(/0x[0-9a-fA-F]{8,}/g)) {
      // The EntryPoint's reason just before the bytes (Alto: "… reason: AA23 reverted 0x…").
      const reason = /\b(AA\d\d(?: [A-Za-z ]*[A-Za-z])?)\s*:?\s*$/.exec(t.slice(0, m.index))?.[1]
      const d = decodeRevert(m[0] as Hex, reason)
      if (!d) continue
      // The innermost error (the validator's) wins over an EntryPoint wrapper.
      if (d.source !== 'EntryPoint') return d
      best ??= d
    }
  }
  return best
}
