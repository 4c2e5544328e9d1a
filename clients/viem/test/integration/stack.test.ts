// Against the real stack (anvil + the canonical EntryPoints + the project's contracts, Alto,
// ta-sim, the companion), as ./run.sh's demo leaves it: an owner, an agent credential and an
// active session on a deployed AgentAccount of the EntryPoint version it names.
// clients/viem/run.sh starts it (once per version) and passes its stack.json (see the README's
// "The demo") as KMS_STACK_JSON.
import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { type Address, createPublicClient, defineChain, getAddress, http, parseEther } from 'viem'
import { createBundlerClient } from 'viem/account-abstraction'
import { anvil } from 'viem/chains'

import { agentNonceKey, decodeSessionError, toAgentSessionAccount } from '../../src/index.js'

const stackFile = process.env.KMS_STACK_JSON
if (!stackFile) throw new Error('KMS_STACK_JSON is not set: run clients/viem/run.sh')
const stack = JSON.parse(readFileSync(stackFile, 'utf8'))
const credential = readFileSync(stack.agent.credentialFile, 'utf8').trim()
const allowed = getAddress(stack.agent.allowedTarget) as Address
const agent = getAddress(stack.agent.address) as Address
const version = stack.chain.entryPointVersion as '0.7' | '0.8'

const chain = defineChain({ ...anvil, id: stack.chain.chainId, rpcUrls: { default: { http: [stack.chain.rpcUrl] } } })
const client = createPublicClient({ chain, transport: http(stack.chain.rpcUrl) })

async function setup() {
  const account = await toAgentSessionAccount({
    client,
    companionUrl: stack.companion.url,
    credential,
    account: stack.account,
    entryPoint: { version, address: stack.chain.entryPoint },
  })
  const bundler = createBundlerClient({
    client,
    account,
    transport: http(stack.chain.bundlerUrl),
    // Alto's own price ("fast"), as the companion does.
    userOperation: {
      async estimateFeesPerGas({ bundlerClient }) {
        const p = (await bundlerClient.request({ method: 'pimlico_getUserOperationGasPrice' } as never)) as {
          fast: { maxFeePerGas: string; maxPriorityFeePerGas: string }
        }
        return { maxFeePerGas: BigInt(p.fast.maxFeePerGas), maxPriorityFeePerGas: BigInt(p.fast.maxPriorityFeePerGas) }
      },
    },
  })
  return { account, bundler }
}

describe(`the agent's session through Alto (EntryPoint ${stack.chain.entryPointVersion})`, () => {
  it('learns the agent from the companion', async () => {
    const { account } = await setup()
    expect(account.address).toBe(getAddress(stack.account))
    expect(account.entryPoint.version).toBe(version)
    expect(account.agentAddress).toBe(agent)
    expect(account.keyId).toBe(stack.agent.keyId)
    expect(await account.isDeployed()).toBe(true)
  })

  it('an operation to the allowed target lands, in the agent lane, with a 106-byte signature', async () => {
    const { account, bundler } = await setup()
    const before = await client.getBalance({ address: allowed })
    const nonce = await account.getNonce()
    expect(nonce >> 64n).toBe(agentNonceKey(agent))
    const hash = await bundler.sendUserOperation({ calls: [{ to: allowed, value: parseEther('0.01') }] })
    const receipt = await bundler.waitForUserOperationReceipt({ hash, timeout: 60_000 })
    expect(receipt.success).toBe(true)
    expect(receipt.nonce).toBe(nonce)
    expect(await client.getBalance({ address: allowed })).toBe(before + parseEther('0.01'))
    const op = await bundler.getUserOperation({ hash })
    expect(op.userOperation.signature.length).toBe(2 + 2 * 106)
    expect(await account.getNonce()).toBe(nonce + 1n)
  })

  it('a batch (executeBatch) lands', async () => {
    const { bundler } = await setup()
    const before = await client.getBalance({ address: allowed })
    const hash = await bundler.sendUserOperation({
      calls: [
        { to: allowed, value: 1000n },
        { to: allowed, value: 2000n },
      ],
    })
    const receipt = await bundler.waitForUserOperationReceipt({ hash, timeout: 60_000 })
    expect(receipt.success).toBe(true)
    expect(await client.getBalance({ address: allowed })).toBe(before + 3000n)
  })

  it("a disallowed target is refused, with the validator's error decoded", async () => {
    const { bundler } = await setup()
    const dead = '0x000000000000000000000000000000000000dEaD'
    const err = await bundler.sendUserOperation({ calls: [{ to: dead, value: 1n }] }).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(err, 'the operation was accepted').toBeDefined()
    const decoded = decodeSessionError(err)
    // viem: UserOperationExecutionError ← SmartAccountFunctionRevertedError ← Alto's
    // "UserOperation reverted during simulation with reason: AA23 reverted 0x<TargetNotAllowed>".
    expect((err as Error).name).toBe('UserOperationExecutionError')
    expect(decoded, String(err)).toMatchObject({
      source: 'SessionKeyValidator',
      name: 'TargetNotAllowed',
      entryPointReason: 'AA23 reverted',
    })
    expect(decoded!.args).toEqual([dead])
  })
})
