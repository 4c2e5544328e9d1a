// toAgentSessionAccount with a fake companion (a local key signing as the TA does) and a fake
// node: the userOpHash it sends to /kms/sign-agent for both EntryPoint versions is the Rust
// vector's (companion/chain/src/userop/v0_7.rs `VECTOR_HASH_V07` and v0_8.rs `VECTOR_HASH_V08`,
// computed by the canonical EntryPoints' own getUserOpHash on anvil, chain id 31337), the
// nonce is read in the agent's lane, and the stub and refusals are as documented.
import { describe, expect, it } from 'vitest'
import {
  type Hex,
  createPublicClient,
  custom,
  decodeFunctionData,
  encodeAbiParameters,
  hashMessage,
  parseAbi,
} from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { entryPoint07Address, entryPoint08Address } from 'viem/account-abstraction'
import { anvil } from 'viem/chains'

import { agentNonceKey, encodeSessionSignature, stubSessionSignature, toAgentSessionAccount } from '../../src/index.js'

const ACCOUNT = '0x1111111111111111111111111111111111111111'
const agentKey = privateKeyToAccount('0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d')
const KEY_ID = 'wallet-1:0'

// The operation of the Rust vector (`vector_op`), sender aside.
const vectorOp = {
  nonce: 0x2an | (7n << 64n),
  callData:
    '0xb61d27f6000000000000000000000000222222222222222222222222222222222222222200000000000000000000000000000000000000000000000000000000000003e800000000000000000000000000000000000000000000000000000000000000600000000000000000000000000000000000000000000000000000000000000000',
  factory: '0x3333333333333333333333333333333333333333',
  factoryData: '0x5fbfb9cf00',
  preVerificationGas: 50_000n,
  verificationGasLimit: 500_000n,
  callGasLimit: 100_000n,
  maxFeePerGas: 2_000_000_000n,
  maxPriorityFeePerGas: 1_000_000_000n,
  paymaster: '0x4444444444444444444444444444444444444444',
  paymasterVerificationGasLimit: 60_000n,
  paymasterPostOpGasLimit: 40_000n,
  paymasterData: '0xc0ffee',
  signature: '0xdeadbeef',
} as const

function fakeCompanion(opts: { period?: number; periodIndex?: number; tamper?: (sig: Hex) => Hex } = {}) {
  const requests: { method: string; url: string; auth: string | null; body: any }[] = []
  const fetch = (async (url: string, init: RequestInit) => {
    const body = init.body ? JSON.parse(init.body as string) : undefined
    requests.push({ method: init.method ?? 'GET', url, auth: new Headers(init.headers).get('authorization'), body })
    const json = (status: number, v: unknown) => new Response(JSON.stringify(v), { status })
    if (url.startsWith('http://companion.test/agent/session?account='))
      return json(200, {
        keyId: KEY_ID,
        agentAddress: agentKey.address,
        account: ACCOUNT,
        period: opts.period ?? 0,
        periodIndex: opts.periodIndex ?? 0,
      })
    if (url === 'http://companion.test/kms/sign-agent') {
      if (body.keyId !== KEY_ID) return json(403, { code: 'forbidden', message: 'keyId' })
      const rsv = await agentKey.signMessage({ message: { raw: body.payload } })
      const sig = encodeSessionSignature({ account: body.accountAddress, agent: agentKey.address, rsv })
      return json(200, { keyId: KEY_ID, agentAddress: agentKey.address, signature: opts.tamper?.(sig) ?? sig })
    }
    return json(404, { code: 'not_found' })
  }) as typeof globalThis.fetch
  return { fetch, requests }
}

function fakeNode() {
  const keys: bigint[] = []
  const client = createPublicClient({
    chain: anvil,
    transport: custom({
      async request({ method, params }: { method: string; params: any }) {
        if (method === 'eth_chainId') return '0x7a69'
        if (method === 'eth_getCode') return '0x6000'
        if (method === 'eth_call') {
          const { args } = decodeFunctionData({
            abi: parseAbi(['function getNonce(address, uint192) view returns (uint256)']),
            data: params[0].data,
          })
          keys.push(args[1])
          return encodeAbiParameters([{ type: 'uint256' }], [(args[1] << 64n) | 3n])
        }
        throw new Error(`unexpected ${method}`)
      },
    }),
  })
  return { client, keys }
}

const setup = async (version: '0.7' | '0.8', companion = fakeCompanion()) => {
  const node = fakeNode()
  const account = await toAgentSessionAccount({
    client: node.client,
    companionUrl: 'http://companion.test/',
    credential: 'jwt-of-the-agent',
    account: ACCOUNT,
    entryPoint: { version },
    fetch: companion.fetch,
  })
  return { account, node, companion }
}

describe('toAgentSessionAccount', () => {
  for (const [version, entryPoint, hash] of [
    ['0.7', entryPoint07Address, '0x6226d388b9eeafd16264b979d58847aaa287dd4c0724259f414ea468434dbf82'],
    ['0.8', entryPoint08Address, '0x9346440775ac135b6e34cdef2187622866fdfb94b4f09528bea840d895224fc9'],
  ] as const) {
    it(`EntryPoint ${version}: signs the Rust vector's userOpHash through /kms/sign-agent`, async () => {
      const { account, companion } = await setup(version)
      expect(account.entryPoint).toMatchObject({ version, address: entryPoint })
      const sig = await account.signUserOperation({ ...vectorOp, chainId: 31337 })
      const sign = companion.requests.find((r) => r.url.endsWith('/kms/sign-agent'))!
      expect(sign.method).toBe('POST')
      expect(sign.auth).toBe('Bearer jwt-of-the-agent')
      expect(sign.body).toEqual({ keyId: KEY_ID, payload: hash, accountAddress: ACCOUNT })
      expect(sig.length).toBe(2 + 2 * 106)
      expect(sig.slice(0, 4)).toBe('0x08')
    })
  }

  it("reads the nonce in the agent's own lane, whatever key viem proposes", async () => {
    const { account, node } = await setup('0.7')
    const nonce = await account.getNonce()
    expect(node.keys).toEqual([agentNonceKey(agentKey.address)])
    expect(nonce).toBe((agentNonceKey(agentKey.address) << 64n) | 3n)
    await account.getNonce({ key: 12345n })
    expect(node.keys[1]).toBe(agentNonceKey(agentKey.address))
  })

  it('with a periodic budget, the lane of the current period', async () => {
    const { account, node } = await setup('0.7', fakeCompanion({ period: 86400, periodIndex: 4 }))
    await account.getNonce()
    expect(node.keys).toEqual([agentNonceKey(agentKey.address, 4n)])
  })

  it('the stub is the 106-byte session stub; no factory; calls are execute/executeBatch', async () => {
    const { account } = await setup('0.8')
    expect(await account.getStubSignature()).toBe(stubSessionSignature(ACCOUNT, agentKey.address))
    expect(await account.getFactoryArgs()).toEqual({ factory: undefined, factoryData: undefined })
    expect((await account.encodeCalls([{ to: ACCOUNT, value: 1n }])).slice(0, 10)).toBe('0xb61d27f6')
    expect((await account.encodeCalls([{ to: ACCOUNT }, { to: ACCOUNT }])).slice(0, 10)).toBe('0x34fcd5be')
  })

  it('refuses a signature that does not recover to the agent or names another account', async () => {
    const flip = (sig: Hex) => (sig.slice(0, -4) + (sig.slice(-4, -2) === '00' ? '01' : '00') + sig.slice(-2)) as Hex
    const bad = await setup('0.7', fakeCompanion({ tamper: flip }))
    await expect(bad.account.signUserOperation({ ...vectorOp, chainId: 31337 })).rejects.toThrow(/recover/)
    const other = (sig: Hex) => (sig.slice(0, 4) + '22'.repeat(20) + sig.slice(44)) as Hex
    const wrong = await setup('0.7', fakeCompanion({ tamper: other }))
    await expect(wrong.account.signUserOperation({ ...vectorOp, chainId: 31337 })).rejects.toThrow(/names account/)
  })

  it('signMessage and signTypedData throw: a session key has no ERC-1271 power', async () => {
    const { account } = await setup('0.7')
    await expect(account.signMessage({ message: 'hi' })).rejects.toThrow(/no ERC-1271 power/)
    await expect(
      account.signTypedData({
        domain: { name: 'x' },
        types: { M: [{ name: 'a', type: 'uint256' }] },
        primaryType: 'M',
        message: { a: 1n },
      }),
    ).rejects.toThrow(/no ERC-1271 power/)
    expect(hashMessage('hi')).toMatch(/^0x/)
  })
})
