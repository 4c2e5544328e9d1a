// `toAgentSessionAccount`: a viem SmartAccount for an agent's session on `AgentAccount`, signed by
// the agent key in the companion's TEE through `POST /kms/sign-agent`.

import {
  type Address,
  type Chain,
  type Client,
  type Hex,
  type JsonRpcAccount,
  type LocalAccount,
  type Transport,
  BaseError,
  getAddress,
  isAddressEqual,
  parseAbi,
  recoverMessageAddress,
} from 'viem'
import {
  type SmartAccount,
  type SmartAccountImplementation,
  entryPoint07Abi,
  entryPoint07Address,
  entryPoint08Abi,
  entryPoint08Address,
  getUserOperationHash,
  toSmartAccount,
} from 'viem/account-abstraction'
import { readContract } from 'viem/actions'

import {
  agentNonceKey,
  decodeAgentAccountCalls,
  encodeAgentAccountCalls,
  parseSessionSignature,
  stubSessionSignature,
} from './session.js'

/** The EntryPoint versions `AgentAccount` is deployed for. */
export type AgentEntryPointVersion = '0.7' | '0.8'

export type ToAgentSessionAccountParameters<version extends AgentEntryPointVersion = '0.7'> = {
  /** A client of the chain (reads the EntryPoint's nonce and the account's code; its chain id
   * goes into the userOpHash). */
  client: Client<Transport, Chain | undefined, JsonRpcAccount | LocalAccount | undefined>
  /** The companion's base URL, e.g. `http://127.0.0.1:3000`. */
  companionUrl: string
  /** The agent's credential (the JWT from `/kms/create-agent-key`), sent as a Bearer token. */
  credential: string
  /** The smart account (`AgentAccount`) the session was granted on. */
  account: Address
  /** The EntryPoint the account was deployed for: its version and, unless canonical, address
   * (default: the canonical v0.7 EntryPoint). */
  entryPoint?: { version: version; address?: Address | undefined } | undefined
  /** The agent key id (`"<wallet>:<index>"`) and address. Default: read from the companion's
   * `GET /agent/session?account=…` when the account is created. */
  keyId?: string | undefined
  agentAddress?: Address | undefined
  /** The budget period of the next operation (the nonce key's top 32 bits). Default: the
   * `periodIndex` of `GET /agent/session` (read before each operation, only for sessions with a
   * periodic budget; 0 otherwise). */
  periodIndex?: (() => Promise<bigint> | bigint) | undefined
  /** `fetch` to use (default: the global one). */
  fetch?: typeof fetch | undefined
}

/** What the account adds to viem's `SmartAccount`. */
export type AgentSessionExtension = {
  /** The agent key's address (whose lane the nonces are in). */
  agentAddress: Address
  /** The agent key id (`"<wallet>:<index>"`). */
  keyId: string
  /** The companion's base URL. */
  companionUrl: string
}

/** The account `toAgentSessionAccount` returns. */
export type AgentSessionAccount<version extends AgentEntryPointVersion = '0.7'> = SmartAccount<
  SmartAccountImplementation<
    version extends '0.7' ? typeof entryPoint07Abi : typeof entryPoint08Abi,
    version,
    AgentSessionExtension
  >
>

/** An error from the companion: its HTTP status, and the `code` and `details` of its answer. */
export class CompanionError extends BaseError {
  status: number
  code: string | undefined
  body: unknown
  constructor(path: string, status: number, body: unknown) {
    const b = (body && typeof body === 'object' ? body : {}) as Record<string, unknown>
    const code = typeof b.code === 'string' ? b.code : undefined
    const msg = typeof b.message === 'string' ? b.message : typeof b.error === 'string' ? b.error : ''
    super(`companion ${path}: HTTP ${status}${code ? ` ${code}` : ''}${msg ? `: ${msg}` : ''}`, {
      name: 'CompanionError',
    } as never)
    this.status = status
    this.code = code
    this.body = body
  }
}

/** The part of `GET /agent/session` this account uses. */
type AgentSession = {
  keyId: string
  agentAddress: Address
  account: Address
  period: number
  periodIndex: number
}

const NO_1271 =
  'an agent session key cannot sign messages or typed data for the account: it has no ERC-1271 ' +
  "power (AgentAccount's isValidSignature accepts only the owner's signature). It signs only " +
  'UserOperations, through the companion; ask the owner (/Sign or /SignHash with "Account") instead.'

/**
 * A viem `SmartAccount` for an agent's session on an `AgentAccount`: `signUserOperation` has the
 * agent key sign the userOpHash in the companion's TEE (`POST /kms/sign-agent`, Bearer credential)
 * and returns the 106-byte session signature, checked here (layout, account, agent, recovery);
 * nonces are read in the agent's own lane (see `agentNonceKey`); the gas-estimation stub is the
 * 106-byte session stub (see `stubSessionSignature`). The account must already be deployed (the
 * owner's grant deploys it), so there is no factory. `signMessage` and `signTypedData` throw.
 */
export async function toAgentSessionAccount<version extends AgentEntryPointVersion = '0.7'>(
  parameters: ToAgentSessionAccountParameters<version>,
): Promise<AgentSessionAccount<version>> {
  const { client, credential } = parameters
  const companionUrl = parameters.companionUrl.replace(/\/+$/, '')
  const doFetch = parameters.fetch ?? globalThis.fetch
  const account = getAddress(parameters.account)
  const version = (parameters.entryPoint?.version ?? '0.7') as version
  if (version !== '0.7' && version !== '0.8')
    throw new Error(`EntryPoint version ${String(version)}: AgentAccount supports 0.7 and 0.8`)
  const entryPoint = {
    abi: version === '0.7' ? entryPoint07Abi : entryPoint08Abi,
    address:
      parameters.entryPoint?.address ?? (version === '0.7' ? entryPoint07Address : entryPoint08Address),
    version,
  } as const

  const call = async (method: 'GET' | 'POST', path: string, body?: unknown): Promise<unknown> => {
    const res = await doFetch(`${companionUrl}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${credential}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    })
    const text = await res.text()
    let json: unknown
    try {
      json = text ? JSON.parse(text) : undefined
    } catch {
      json = text
    }
    if (!res.ok) throw new CompanionError(`${method} ${path.split('?')[0]}`, res.status, json)
    return json
  }
  const readSession = async (): Promise<AgentSession> =>
    (await call('GET', `/agent/session?account=${account}`)) as AgentSession

  let keyId = parameters.keyId
  let agent = parameters.agentAddress ? getAddress(parameters.agentAddress) : undefined
  let periodic = false
  if (!keyId || !agent || !parameters.periodIndex) {
    const s = await readSession()
    if (!isAddressEqual(s.account, account))
      throw new Error(`the companion answered the session of ${s.account}, not ${account}`)
    keyId ??= s.keyId
    agent ??= getAddress(s.agentAddress)
    periodic = s.period > 0
  }
  const agentAddress = agent
  const agentKeyId = keyId
  const periodIndex = async (): Promise<bigint> => {
    if (parameters.periodIndex) return BigInt(await parameters.periodIndex())
    return periodic ? BigInt((await readSession()).periodIndex) : 0n
  }

  return toSmartAccount({
    client,
    entryPoint,
    extend: { agentAddress, keyId: agentKeyId, companionUrl } satisfies AgentSessionExtension,

    async getAddress() {
      return account
    },

    async encodeCalls(calls) {
      return encodeAgentAccountCalls(calls)
    },

    async decodeCalls(data) {
      return decodeAgentAccountCalls(data)
    },

    // Deployed by the owner's grant: never an initCode.
    async getFactoryArgs() {
      return { factory: undefined, factoryData: undefined }
    },

    // The agent's own lane, whatever key viem's nonce-key manager proposes: the validator refuses
    // any other (NonceLaneNotAllowed).
    async getNonce() {
      const key = agentNonceKey(agentAddress, await periodIndex())
      return readContract(client, {
        abi: parseAbi(['function getNonce(address, uint192) view returns (uint256)']),
        address: entryPoint.address,
        functionName: 'getNonce',
        args: [account, key],
      })
    },

    async getStubSignature() {
      return stubSessionSignature(account, agentAddress)
    },

    async signMessage() {
      throw new BaseError(NO_1271)
    },

    async signTypedData() {
      throw new BaseError(NO_1271)
    },

    async signUserOperation(parameters) {
      const { chainId = client.chain?.id, ...userOperation } = parameters
      if (chainId === undefined) throw new Error('no chain id: give the client a chain, or chainId')
      const userOpHash = getUserOperationHash({
        chainId,
        entryPointAddress: entryPoint.address,
        entryPointVersion: entryPoint.version,
        userOperation: { ...(userOperation as object), sender: account } as never,
      })
      const answer = (await call('POST', '/kms/sign-agent', {
        keyId: agentKeyId,
        payload: userOpHash,
        accountAddress: account,
      })) as { signature: Hex; agentAddress: Address }
      // The companion answers the TA's signature as is; check it before it goes on chain.
      const parts = parseSessionSignature(answer.signature)
      if (!parts) throw new Error('the companion answered a signature without the 106-byte session layout')
      if (!isAddressEqual(parts.account, account) || !isAddressEqual(parts.agent, agentAddress))
        throw new Error(
          `the companion's signature names account ${parts.account} and key ${parts.agent}, not ${account} and ${agentAddress}`,
        )
      const signer = await recoverMessageAddress({ message: { raw: userOpHash }, signature: parts.rsv })
      if (!isAddressEqual(signer, agentAddress))
        throw new Error(`the companion's signature recovers to ${signer}, not the agent key ${agentAddress}`)
      return answer.signature
    },
  }) as never
}
