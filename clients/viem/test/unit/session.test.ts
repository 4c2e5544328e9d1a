// The pure parts against vectors of the Rust implementation. Where each vector comes from:
// - nonce keys: the unit tests of companion/chain/src/nonce.rs (`agent_keys_are_distinct…`,
//   `module_lanes_are_validator_lane_period`) and `NonceKey::for_agent_period`'s definition;
// - the stub: `stub_session_signature` in companion/chain/src/signature.rs (r = 1, s = 1, v = 27
//   after the marker, account and key), written out byte by byte;
// - callData: `cast calldata` (foundry) of AgentAccount's execute/executeBatch signatures, the
//   encoding `encode_calls` (companion/chain/src/account.rs) produces with alloy's bindings.
import { describe, expect, it } from 'vitest'
import { decodeErrorResult, encodeErrorResult, getAddress, toHex } from 'viem'
import { entryPoint07Abi } from 'viem/account-abstraction'

import {
  SESSION_MARKER,
  SESSION_SIGNATURE_LENGTH,
  agentNonceKey,
  decodeAgentAccountCalls,
  decodeRevert,
  decodeSessionError,
  encodeAgentAccountCalls,
  encodeSessionSignature,
  moduleNonceKey,
  nonceOf,
  parseSessionSignature,
  sessionKeyValidatorErrorsAbi,
  stubSessionSignature,
} from '../../src/index.js'

const AGENT = '0x4b39F7b0624b9dB86AD293686bc38B903142dbBc'
const VALIDATOR = '0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0'

describe('nonce keys (NonceKey, companion/chain/src/nonce.rs)', () => {
  it('an agent key is its address as a number', () => {
    expect(agentNonceKey(AGENT)).toBe(0x4b39f7b0624b9db86ad293686bc38b903142dbbcn)
    expect(agentNonceKey(AGENT.toLowerCase() as `0x${string}`)).toBe(agentNonceKey(AGENT))
    expect(agentNonceKey(AGENT, 0)).toBe(agentNonceKey(AGENT))
    expect(agentNonceKey(AGENT)).not.toBe(agentNonceKey('0x71b4a2d9B91726bdb5849D928967A1654D7F3de7'))
  })
  it('a period goes in the 32 bits above the address', () => {
    const p7 = agentNonceKey(AGENT, 7n)
    expect(p7 >> 160n).toBe(7n)
    expect(p7 & ((1n << 160n) - 1n)).toBe(agentNonceKey(AGENT))
    expect(toHex(p7, { size: 24 })).toBe('0x000000074b39f7b0624b9db86ad293686bc38b903142dbbc')
    expect(agentNonceKey(AGENT, 0xffffffffn) >> 160n).toBe(0xffffffffn)
    expect(() => agentNonceKey(AGENT, 1n << 32n)).toThrow(/does not fit/)
    expect(() => agentNonceKey(AGENT, -1)).toThrow(/does not fit/)
  })
  it('the full nonce is key << 64 | sequence', () => {
    const n = nonceOf(agentNonceKey(AGENT), 5n)
    expect(toHex(n, { size: 32 })).toBe('0x000000004b39f7b0624b9db86ad293686bc38b903142dbbc0000000000000005')
    expect(nonceOf(7n, 42n)).toBe((7n << 64n) | 42n)
  })
  it('an ERC-7579 module lane is validator << 32 | lane << 16 | period', () => {
    expect(moduleNonceKey(VALIDATOR, 2, 7)).toBe(0x9fe46736679d2d9a65f0992f2272de9f3c7fa6e000020007n)
    expect(() => moduleNonceKey(VALIDATOR, 1, 1 << 16)).toThrow(/does not fit/)
    expect(() => moduleNonceKey(VALIDATOR, 1 << 16, 0)).toThrow(/does not fit/)
  })
})

describe('the session signature and its stub (companion/chain/src/signature.rs)', () => {
  const account = '0x1111111111111111111111111111111111111111'
  const key = '0x2222222222222222222222222222222222222222'
  it('the stub is 0x08 ‖ account ‖ key ‖ r = 1 ‖ s = 1 ‖ v = 27, 106 bytes', () => {
    const stub = stubSessionSignature(account, key)
    expect(stub).toBe(
      '0x08' +
        '1111111111111111111111111111111111111111' +
        '2222222222222222222222222222222222222222' +
        '0000000000000000000000000000000000000000000000000000000000000001' +
        '0000000000000000000000000000000000000000000000000000000000000001' +
        '1b',
    )
    expect((stub.length - 2) / 2).toBe(SESSION_SIGNATURE_LENGTH)
    expect(SESSION_MARKER).toBe(8)
  })
  it('layout round-trips; other lengths and markers are not session signatures', () => {
    const rsv = toHex(Uint8Array.from({ length: 65 }, (_, i) => i))
    const sig = encodeSessionSignature({ account, agent: key, rsv })
    expect(parseSessionSignature(sig)).toEqual({ account: getAddress(account), agent: getAddress(key), rsv })
    expect(parseSessionSignature(`0x09${sig.slice(4)}`)).toBeUndefined()
    expect(parseSessionSignature(sig.slice(0, -2) as `0x${string}`)).toBeUndefined()
    expect(() => encodeSessionSignature({ account, agent: key, rsv: rsv.slice(0, -2) as `0x${string}` })).toThrow(
      /65 bytes/,
    )
  })
})

describe("AgentAccount's callData (encode_calls, companion/chain/src/account.rs)", () => {
  const a = '0x1111111111111111111111111111111111111111'
  const b = '0x2222222222222222222222222222222222222222'
  it('one call is execute(target, value, data)', () => {
    const data = encodeAgentAccountCalls([{ to: a, value: 1000n, data: '0xdeadbeef' }])
    // cast calldata "execute(address,uint256,bytes)" 0x11…11 1000 0xdeadbeef
    expect(data).toBe(
      '0xb61d27f6000000000000000000000000111111111111111111111111111111111111111100000000000000000000000000000000000000000000000000000000000003e800000000000000000000000000000000000000000000000000000000000000600000000000000000000000000000000000000000000000000000000000000004deadbeef00000000000000000000000000000000000000000000000000000000',
    )
    expect(decodeAgentAccountCalls(data)).toEqual([{ to: getAddress(a), value: 1000n, data: '0xdeadbeef' }])
  })
  it('several are executeBatch((target, value, data)[])', () => {
    const data = encodeAgentAccountCalls([{ to: a, value: 1n }, { to: b, data: '0xa9059cbb' }])
    // cast calldata "executeBatch((address,uint256,bytes)[])" "[(0x11…11,1,0x),(0x22…22,0,0xa9059cbb)]"
    expect(data).toBe(
      '0x34fcd5be00000000000000000000000000000000000000000000000000000000000000200000000000000000000000000000000000000000000000000000000000000002000000000000000000000000000000000000000000000000000000000000004000000000000000000000000000000000000000000000000000000000000000c000000000000000000000000011111111111111111111111111111111111111110000000000000000000000000000000000000000000000000000000000000001000000000000000000000000000000000000000000000000000000000000006000000000000000000000000000000000000000000000000000000000000000000000000000000000000000002222222222222222222222222222222222222222000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000600000000000000000000000000000000000000000000000000000000000000004a9059cbb00000000000000000000000000000000000000000000000000000000',
    )
    expect(decodeAgentAccountCalls(data)).toEqual([
      { to: getAddress(a), value: 1n, data: '0x' },
      { to: getAddress(b), value: 0n, data: '0xa9059cbb' },
    ])
  })
  it('no call is an error', () => {
    expect(() => encodeAgentAccountCalls([])).toThrow(/at least one call/)
  })
})

describe('refusals decoded (revert::decode, companion/chain/src/revert.rs)', () => {
  const inner = encodeErrorResult({
    abi: sessionKeyValidatorErrorsAbi,
    errorName: 'TargetNotAllowed',
    args: ['0x000000000000000000000000000000000000dEaD'],
  })
  const wrapped = encodeErrorResult({
    abi: entryPoint07Abi,
    errorName: 'FailedOpWithRevert',
    args: [0n, 'AA23 reverted', inner],
  })
  it('unwraps FailedOpWithRevert to the validator error', () => {
    const d = decodeRevert(wrapped)
    expect(d).toMatchObject({
      source: 'SessionKeyValidator',
      name: 'TargetNotAllowed',
      args: ['0x000000000000000000000000000000000000dEaD'],
      entryPointReason: 'AA23 reverted',
    })
    expect(decodeErrorResult({ abi: sessionKeyValidatorErrorsAbi, data: d!.data }).errorName).toBe('TargetNotAllowed')
  })
  it('finds the bytes in a bundler error message (Alto: "… AA23 reverted 0x…")', () => {
    const err = new Error('UserOperation reverted during simulation', {
      cause: { code: -32500, message: `UserOperation reverted during simulation with reason: AA23 reverted ${inner}` },
    })
    expect(decodeSessionError(err)).toMatchObject({
      source: 'SessionKeyValidator',
      name: 'TargetNotAllowed',
      entryPointReason: 'AA23 reverted',
    })
    expect(decodeSessionError(new Error('nothing here 0x12'))).toBeUndefined()
  })
})
