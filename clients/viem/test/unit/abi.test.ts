// The ABI fragments in src/abi.ts are the artifacts' own (contracts/artifacts/*.json).
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

import { agentAccountAbi, agentAccountErrorsAbi, sessionKeyValidatorErrorsAbi } from '../../src/abi.js'

const artifact = (name: string) =>
  JSON.parse(
    readFileSync(fileURLToPath(new URL(`../../../../contracts/artifacts/${name}.json`, import.meta.url)), 'utf8'),
    (k, v) => (k === 'internalType' ? undefined : v),
  ).abi as { type: string; name: string }[]

describe('ABI fragments', () => {
  it("are AgentAccount's execute, executeBatch and errors", () => {
    const abi = artifact('AgentAccount')
    expect(agentAccountAbi).toEqual(abi.filter((x) => x.type === 'function' && ['execute', 'executeBatch'].includes(x.name)))
    expect(agentAccountErrorsAbi).toEqual(abi.filter((x) => x.type === 'error'))
  })
  it("are SessionKeyValidator's errors", () => {
    expect(sessionKeyValidatorErrorsAbi).toEqual(artifact('SessionKeyValidator').filter((x) => x.type === 'error'))
  })
})
