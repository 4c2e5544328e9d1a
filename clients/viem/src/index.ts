export {
  type AgentEntryPointVersion,
  type AgentSessionAccount,
  type AgentSessionExtension,
  CompanionError,
  type ToAgentSessionAccountParameters,
  toAgentSessionAccount,
} from './account.js'
export {
  type AccountCall,
  type DecodedRevert,
  type SessionSignatureParts,
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
  stubSessionSignature,
} from './session.js'
export { agentAccountAbi, agentAccountErrorsAbi, sessionKeyValidatorErrorsAbi } from './abi.js'
