// ERC-7715 against the real stack (issue 17 item 7): a dapp asks the companion for an agent key with
// viem's experimental `erc7715Actions()` (`wallet_grantPermissions` on `<companion>/rpc`, with the
// API key); the owner approves with a passkey (a software P-256 authenticator below, the same
// WebAuthn a browser makes: attestation "none", UP|UV, DER ECDSA) through the HTTP calls /ui makes;
// the dapp gets the grant and the credential, and an operation within the grant lands through Alto.
// clients/viem/run.sh passes the demo's stack.json as KMS_STACK_JSON.
import { createHash, createPrivateKey, generateKeyPairSync, randomBytes, sign } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import {
  type Address,
  createPublicClient,
  createWalletClient,
  decodeAbiParameters,
  defineChain,
  getAddress,
  http,
  parseAbi,
  parseEther,
} from 'viem'
import { createBundlerClient } from 'viem/account-abstraction'
import { anvil } from 'viem/chains'
import { erc7715Actions } from 'viem/experimental'

import { toAgentSessionAccount } from '../../src/index.js'

const stackFile = process.env.KMS_STACK_JSON
if (!stackFile) throw new Error('KMS_STACK_JSON is not set: run clients/viem/run.sh')
const stack = JSON.parse(readFileSync(stackFile, 'utf8'))
const apiKey = readFileSync(stack.companion.apiKeyFile, 'utf8').trim()
const companion: string = stack.companion.url
// The companion's WebAuthn origin for rp id localhost.
const origin = `http://localhost:${new URL(companion).port}`
const version = stack.chain.entryPointVersion as '0.7' | '0.8'
const chain = defineChain({ ...anvil, id: stack.chain.chainId, rpcUrls: { default: { http: [stack.chain.rpcUrl] } } })
const client = createPublicClient({ chain, transport: http(stack.chain.rpcUrl) })

const b64u = (b: Buffer | Uint8Array) => Buffer.from(b).toString('base64url')
const sha256 = (b: Buffer | Uint8Array | string) => createHash('sha256').update(b).digest()

function cborHead(major: number, len: number): Buffer {
  if (len < 24) return Buffer.from([(major << 5) | len])
  if (len < 256) return Buffer.from([(major << 5) | 24, len])
  return Buffer.from([(major << 5) | 25, len >> 8, len & 0xff])
}
const cborText = (s: string) => Buffer.concat([cborHead(3, Buffer.byteLength(s)), Buffer.from(s)])
const cborBytes = (b: Buffer) => Buffer.concat([cborHead(2, b.length), b])

/** A software passkey: P-256, attestation "none", user present and verified, counting. */
class SoftPasskey {
  private readonly key = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  private readonly credId = randomBytes(16)
  private counter = 0

  private clientData(type: string, challenge: string) {
    return Buffer.from(JSON.stringify({ type, challenge, origin, crossOrigin: false }))
  }

  register(options: { publicKey: { challenge: string } }) {
    const jwk = this.key.publicKey.export({ format: 'jwk' }) as { x: string; y: string }
    const cose = Buffer.concat([
      Buffer.from([0xa5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21]),
      cborBytes(Buffer.from(jwk.x, 'base64url')),
      Buffer.from([0x22]),
      cborBytes(Buffer.from(jwk.y, 'base64url')),
    ])
    const len = Buffer.alloc(2)
    len.writeUInt16BE(this.credId.length)
    const authData = Buffer.concat([
      sha256('localhost'),
      Buffer.from([0x01 | 0x04 | 0x40]),
      Buffer.alloc(4),
      Buffer.alloc(16),
      len,
      this.credId,
      cose,
    ])
    const att = Buffer.concat([
      Buffer.from([0xa3]),
      cborText('fmt'),
      cborText('none'),
      cborText('attStmt'),
      Buffer.from([0xa0]),
      cborText('authData'),
      cborBytes(authData),
    ])
    const id = b64u(this.credId)
    return {
      id,
      rawId: id,
      type: 'public-key',
      response: { attestationObject: b64u(att), clientDataJSON: b64u(this.clientData('webauthn.create', options.publicKey.challenge)) },
    }
  }

  assert(options: { publicKey: { challenge: string } }) {
    this.counter += 1
    const count = Buffer.alloc(4)
    count.writeUInt32BE(this.counter)
    const authData = Buffer.concat([sha256('localhost'), Buffer.from([0x01 | 0x04]), count])
    const cdj = this.clientData('webauthn.get', options.publicKey.challenge)
    const signature = sign('sha256', Buffer.concat([authData, sha256(cdj)]), createPrivateKey(this.key.privateKey.export({ format: 'pem', type: 'pkcs8' })))
    const id = b64u(this.credId)
    return {
      id,
      rawId: id,
      type: 'public-key',
      response: { authenticatorData: b64u(authData), clientDataJSON: b64u(cdj), signature: b64u(signature), userHandle: null },
    }
  }
}

// biome-ignore lint: the companion's JSON
type Json = any

async function post(path: string, body: unknown): Promise<Json> {
  const r = await fetch(`${companion}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': apiKey },
    body: JSON.stringify(body),
  })
  const v = await r.json()
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}: ${JSON.stringify(v)}`)
  return v
}

/** The owner's ceremony: `/BeginAuthentication`, then the passkey; the `webAuthnAssertion` object. */
async function ceremony(user: SoftPasskey, keyId: string, purpose: string, payload: unknown) {
  const begin = await post('/BeginAuthentication', { KeyId: keyId, Purpose: purpose, Payload: payload })
  return { begin, webAuthn: { ChallengeId: begin.ChallengeId, Credential: user.assert(begin.Options) } }
}

const factoryAbi = parseAbi(['function getAddress(address owner, uint256 salt) view returns (address)'])

describe(`ERC-7715 wallet_grantPermissions with viem's erc7715Actions (EntryPoint ${version})`, () => {
  it('a dapp asks, the owner approves with a passkey, and an operation within the grant lands', async () => {
    // The owner: a wallet of their own, registered with the software passkey.
    const user = new SoftPasskey()
    const reg = await post('/BeginRegistration', { Description: 'viem erc7715' })
    const wallet = await post('/CompleteRegistration', { ChallengeId: reg.ChallengeId, Credential: user.register(reg.Options) })
    const owner = getAddress(wallet.Address) as Address
    // Its AgentAccount pays the grant's gas and the agent's.
    const account = (await client.readContract({
      address: stack.chain.accountFactory,
      abi: factoryAbi,
      functionName: 'getAddress',
      args: [owner, 0n],
    })) as Address
    await client.request({ method: 'anvil_setBalance' as never, params: [account, '0x8ac7230489e80000'] as never })

    // The dapp: viem's ERC-7715 client on the companion's /rpc (the wallet by its owner address).
    const dapp = createWalletClient({
      chain,
      transport: http(`${companion}/rpc?address=${owner}`, {
        fetchOptions: { headers: { 'x-api-key': apiKey } },
        timeout: 120_000,
      }),
    }).extend(erc7715Actions())
    const payee = getAddress(`0x${randomBytes(20).toString('hex')}`) as Address
    const now = Number((await client.getBlock()).timestamp)
    const expiry = now + 24 * 3600
    const asked = dapp.grantPermissions({
      expiry,
      permissions: [
        {
          type: 'native-token-transfer',
          // `recipients`: the companion's extension naming where plain transfers may go.
          data: { ticker: 'ETH', recipients: [payee] } as { ticker: string },
          policies: [
            { type: 'token-allowance', data: { allowance: parseEther('0.05') } },
            { type: 'gas-limit', data: { limit: parseEther('0.02') } },
          ],
          required: true,
        },
      ],
    })
    let settled = false
    asked.then(
      () => (settled = true),
      () => (settled = true),
    )

    // The owner's page lists the request (polling, as /ui does) …
    let request: Json
    for (let i = 0; i < 100 && !request; i++) {
      const { requests } = await post('/kms/permission-requests', { humanKeyId: wallet.KeyId })
      request = requests[0]
      if (!request) await new Promise((ok) => setTimeout(ok, 100))
    }
    expect(request, 'the request is listed').toBeTruthy()
    expect(request.session.spendCap).toBe(parseEther('0.05').toString())
    expect(request.session.gasCap).toBe(parseEther('0.02').toString())
    expect(request.session.validUntil).toBe(expiry)
    expect(settled).toBe(false)

    // … and the owner approves it with the passkey: the agent, its session, the answer.
    const mint = await ceremony(user, wallet.KeyId, 'CreateAgentKey', request.createAgent)
    const agent = await post('/kms/create-agent-key', { humanKeyId: wallet.KeyId, ...request.createAgent, webAuthnAssertion: mint.webAuthn })
    const grant = await ceremony(user, agent.keyId, 'GrantSession', request.session)
    expect(getAddress(grant.begin.UserOperation.account)).toBe(account)
    const granted = await post('/kms/agent-sessions', { keyId: agent.keyId, ...request.session, webAuthnAssertion: grant.webAuthn })
    expect(granted.status).toBe('included')
    const resolved = await post('/kms/permission-requests/resolve', {
      requestId: request.requestId,
      decision: 'approve',
      keyId: agent.keyId,
      credentialTo: 'requester',
      credential: agent.agentCredential,
    })
    expect(resolved.delivered).toBe(true)

    const result = await asked
    expect(result.expiry).toBe(expiry)
    expect(result.grantedPermissions).toHaveLength(1)
    const [permission] = result.grantedPermissions
    expect(permission?.type).toBe('native-token-transfer')
    expect(permission?.policies[0]?.data).toEqual({ allowance: parseEther('0.05') })
    const signerData = result.signerData as { submitToAddress: Address; credential: string; keyId: string }
    expect(getAddress(signerData.submitToAddress)).toBe(account)
    expect(signerData.keyId).toBe(agent.keyId)
    const [ctxAccount, ctxAgent, ctxKeyId] = decodeAbiParameters(
      [{ type: 'address' }, { type: 'address' }, { type: 'string' }],
      result.permissionsContext as `0x${string}`,
    )
    expect(ctxAccount).toBe(account)
    expect(ctxAgent).toBe(getAddress(agent.agentAddress))
    expect(ctxKeyId).toBe(agent.keyId)

    // The dapp's agent acts with what it was given: within the grant, it lands.
    const agentAccount = await toAgentSessionAccount({
      client,
      companionUrl: companion,
      credential: signerData.credential,
      account: signerData.submitToAddress,
      entryPoint: { version, address: stack.chain.entryPoint },
    })
    const bundler = createBundlerClient({
      client,
      account: agentAccount,
      transport: http(stack.chain.bundlerUrl),
      userOperation: {
        async estimateFeesPerGas({ bundlerClient }) {
          const p = (await bundlerClient.request({ method: 'pimlico_getUserOperationGasPrice' } as never)) as {
            fast: { maxFeePerGas: string; maxPriorityFeePerGas: string }
          }
          return { maxFeePerGas: BigInt(p.fast.maxFeePerGas), maxPriorityFeePerGas: BigInt(p.fast.maxPriorityFeePerGas) }
        },
      },
    })
    const hash = await bundler.sendUserOperation({ calls: [{ to: payee, value: parseEther('0.01') }] })
    const receipt = await bundler.waitForUserOperationReceipt({ hash, timeout: 60_000 })
    expect(receipt.success).toBe(true)
    expect(await client.getBalance({ address: payee })).toBe(parseEther('0.01'))
  }, 180_000)

  it('what the validator cannot enforce is refused by name', async () => {
    const dapp = createWalletClient({
      chain,
      transport: http(`${companion}/rpc?address=${stack.wallet.ownerAddress}`, { fetchOptions: { headers: { 'x-api-key': apiKey } } }),
    }).extend(erc7715Actions())
    const err = await dapp
      .grantPermissions({
        expiry: Math.floor(Date.now() / 1000) + 3600,
        permissions: [
          {
            type: 'contract-call',
            data: { address: stack.chain.testToken, calls: ['transfer(address,uint256)'] },
            policies: [
              { type: 'rate-limit', data: { count: 3, interval: 60 } },
              { type: 'gas-limit', data: { limit: parseEther('0.01') } },
            ],
            required: true,
          },
        ],
      })
      .then(
        () => null,
        (e) => e,
      )
    expect(err).toBeTruthy()
    // viem's RpcRequestError carries the JSON-RPC code and data.
    const cause = (err as { cause?: { code?: number; data?: { unsupported?: string[] } } }).cause ?? err
    expect(JSON.stringify({ code: (cause as { code?: number }).code, data: (cause as { data?: unknown }).data })).toContain('-32010')
    expect((cause as { data?: { unsupported?: string[] } }).data?.unsupported).toEqual(['rate-limit'])
  })
})
