//! [`ChainClient`]: one EntryPoint on one chain, through a node and a bundler.
//!
//! It builds UserOperations for the project's accounts ([`ChainClient::prepare`]): the account
//! address from the factory, `factory`/`factoryData` when the account has no code yet, the nonce
//! from `EntryPoint.getNonce(sender, key)`, fees from the bundler
//! (`pimlico_getUserOperationGasPrice`) or else the node, gas from `eth_estimateUserOperationGas`
//! with a stub signature of the final layout plus [`GasBuffers`], and the userOpHash computed
//! locally for the EntryPoint's version. It submits signed operations with the bundler client's
//! retry rules ([`ChainClient::submit`]), reads sessions from `SessionKeyValidator`
//! ([`ChainClient::read_session`]) and sends the operator's `revokeSession` transaction
//! ([`ChainClient::revoke_session`]).
//!
//! Third-party ERC-7579 accounts ([`AccountKind::Erc7579`]) are driven too, once deployed by their
//! own factories: [`ChainClient::prepare_for`] builds any operation with the kind's callData,
//! [`ChainClient::prepare_erc7579_grants`] the owner's operation installing the validator module and
//! granting in one batch, [`ChainClient::prepare_erc7579_uninstall`] the one ending every session,
//! [`ChainClient::agent_lane`] and [`ChainClient::prepare_agent_op_on`] an agent's operation on its
//! lane; [`NodeClient::account_kind`] detects the kind on chain.
//!
//! [`ChainClient::connect`] checks the set-up before anything is built: the node's and the
//! bundler's chain ids agree (and match the expected one), the bundler serves the EntryPoint, and
//! the factory and validator are deployed and belong to this EntryPoint.
//!
//! No URL is ever put into an error: bundler and node URLs often carry API keys.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use alloy::eips::eip7702::{Authorization, SignedAuthorization};
use alloy::primitives::{Address, Bytes, B256, U256};
use alloy::providers::{DynProvider, Provider};
use kms_contracts::{AgentAccountFactory, IEntryPointV07};

use crate::account::{factory_data, AccountKind, Call, NoCalls};
use crate::bundler::{
    BundlerClient, BundlerError, ExpectedReceipt, RetryPolicy, Submission, UserOperationReceipt,
};
use crate::gas_reuse::{intrinsic_gas, GasCache, RecentFees};
use crate::http::{node_provider, HttpLimits};
use crate::node::{redactions, NodeClient};
use crate::nonce::{AgentLane, NonceGuard, NonceKey, PeriodOutOfRange};
use crate::operator::{OperatorCeiling, OperatorSigner, OperatorSignerError};
use crate::session::{InvalidGrant, ModuleState, SessionGrant, SessionSnapshot};
use crate::userop::v0_7::{GasLimits, GasOverflow, UserOperation};
use crate::userop::{EntryPoint, UnhashableOperation};

/// Why an ERC-7579 step cannot be built for an account (each a refusal with a reason, before
/// anything is signed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Erc7579Error {
    /// The account is not an ERC-7579 account supporting validator modules (no code, an
    /// `AgentAccount`, or `supportsModule(1)` not true).
    #[error("{account} is not an ERC-7579 account with validator modules (found: {found})")]
    NotErc7579 {
        /// The account.
        account: Address,
        /// What was found: `"no code"`, `"agent-account"` or `"unknown"`.
        found: &'static str,
    },
    /// The validator module is not installed on the account (nothing to uninstall).
    #[error("the session key validator is not installed on {account}")]
    ModuleNotInstalled {
        /// The account.
        account: Address,
    },
    /// An ERC-7579 account is deployed by its own factory: [`OpRequest::init`] (the
    /// `AgentAccount` factory's deployment) cannot apply.
    #[error("an ERC-7579 account cannot be deployed by the AgentAccount factory")]
    FactoryInit,
    /// The period index does not fit the account kind's nonce key.
    #[error(transparent)]
    Period(#[from] PeriodOutOfRange),
    /// An EOA can delegate with EIP-7702 only through EntryPoint v0.8 (v0.7 knows no 7702
    /// sender), and only when an implementation to delegate to is configured.
    #[error("an EIP-7702 delegation needs {needs}")]
    Eip7702Unavailable {
        /// What is missing: `"EntryPoint v0.8"` or `"a configured EIP-7702 account implementation"`.
        needs: &'static str,
    },
    /// The address to delegate with EIP-7702 is not an EOA without code.
    #[error("{account} cannot be delegated with EIP-7702: it has code ({found})")]
    NotAnEoa {
        /// The address.
        account: Address,
        /// What it has: `"a contract"` or `"a delegation to <address>"`.
        found: String,
    },
}

/// What an address holds as code, as far as EIP-7702 is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountCode {
    /// No code: an EOA that has not delegated (or a counterfactual account).
    Empty,
    /// An EIP-7702 delegation designator `0xef0100 ‖ delegate`.
    Delegated(Address),
    /// Contract code.
    Contract,
}

impl AccountCode {
    /// Classifies `code`.
    pub fn of(code: &[u8]) -> Self {
        match code {
            [] => AccountCode::Empty,
            [0xef, 0x01, 0x00, delegate @ ..] if delegate.len() == 20 => {
                AccountCode::Delegated(Address::from_slice(delegate))
            }
            _ => AccountCode::Contract,
        }
    }
}

/// Everything [`ChainClient`] can fail with. Messages never contain node or bundler URLs.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The node (JSON-RPC) failed or refused a call.
    #[error("node error while {during}: {message}")]
    Node {
        /// What was being done.
        during: &'static str,
        /// The error, with URLs removed.
        message: String,
    },
    /// The bundler failed or refused.
    #[error(transparent)]
    Bundler(#[from] BundlerError),
    /// The node's, the bundler's and the configured chain ids disagree.
    #[error("chain id mismatch: node {node}, bundler {bundler}, configured {configured:?}")]
    ChainIdMismatch {
        /// `eth_chainId` of the node.
        node: u64,
        /// `eth_chainId` of the bundler.
        bundler: u64,
        /// The configured chain id, if any.
        configured: Option<u64>,
    },
    /// The node's chain id is not the configured one.
    #[error("chain id mismatch: node {node}, configured {configured}")]
    NodeChainIdMismatch {
        /// `eth_chainId` of the node.
        node: u64,
        /// The configured chain id.
        configured: u64,
    },
    /// The bundler does not serve the configured EntryPoint.
    #[error("the bundler does not serve EntryPoint {entry_point}; it serves {supported:?}")]
    EntryPointNotSupported {
        /// The configured EntryPoint.
        entry_point: Address,
        /// What `eth_supportedEntryPoints` answered.
        supported: Vec<Address>,
    },
    /// A contract the configuration names has no code.
    #[error("no contract at {address} (configured {what})")]
    NoCode {
        /// Which setting.
        what: &'static str,
        /// The address.
        address: Address,
    },
    /// The factory belongs to another EntryPoint or validator.
    #[error("factory {factory} is for EntryPoint {factory_entry_point} and validator {factory_validator}, not {entry_point} and {validator}")]
    FactoryMismatch {
        /// The factory.
        factory: Address,
        /// Its EntryPoint.
        factory_entry_point: Address,
        /// Its validator.
        factory_validator: Address,
        /// The configured EntryPoint.
        entry_point: Address,
        /// The configured validator.
        validator: Address,
    },
    /// The sender is not the factory's account for the given owner and salt.
    #[error("sender {sender} is not the factory's account {expected} for this owner and salt")]
    SenderMismatch {
        /// The operation's sender.
        sender: Address,
        /// The factory's address for (owner, salt).
        expected: Address,
    },
    /// An operation without calls.
    #[error(transparent)]
    NoCalls(#[from] NoCalls),
    /// A session grant the validator would refuse.
    #[error(transparent)]
    InvalidGrant(#[from] InvalidGrant),
    /// The operation cannot be hashed locally.
    #[error(transparent)]
    Unhashable(#[from] UnhashableOperation),
    /// A gas value from the bundler does not fit the packed form.
    #[error(transparent)]
    GasOverflow(#[from] GasOverflow),
    /// The operator signer failed.
    #[error(transparent)]
    OperatorSigner(#[from] OperatorSignerError),
    /// The operator's transaction cannot be made within the TA's ceilings (gas estimate or the
    /// network's base fee above them).
    #[error(transparent)]
    OperatorCeiling(#[from] OperatorCeiling),
    /// The operator key is not the session's revoker, so the chain would refuse its
    /// `revokeSession`.
    #[error("operator {operator} is not the revoker of this session (revoker {revoker})")]
    NotRevoker {
        /// The operator address.
        operator: Address,
        /// The session's revoker.
        revoker: Address,
    },
    /// The agent key has never had a session on the account.
    #[error("agent key {key} has no session on account {account}")]
    NoSession {
        /// The account.
        account: Address,
        /// The agent key.
        key: Address,
    },
    /// An operation's fee or gas, as quoted by the bundler or the node, is over a configured
    /// ceiling ([`GasCeilings`]); nothing was signed.
    #[error("{ceiling} {value} is over the ceiling {limit}")]
    AboveCeiling {
        /// Which ceiling.
        ceiling: Ceiling,
        /// The operation's value.
        value: U256,
        /// The ceiling.
        limit: U256,
    },
    /// An ERC-7579 step that does not apply to the account.
    #[error(transparent)]
    Erc7579(#[from] Erc7579Error),
    /// A transaction was mined but reverted.
    #[error("transaction {tx_hash} reverted")]
    TransactionReverted {
        /// Its hash.
        tx_hash: B256,
    },
    /// A transaction was not mined in time.
    #[error("transaction {tx_hash} not mined within {waited:?}")]
    TransactionTimeout {
        /// Its hash.
        tx_hash: B256,
        /// How long it waited.
        waited: Duration,
    },
}

/// Ceilings on every operation the companion builds (agent intents and owner operations alike),
/// whatever the bundler or the node quotes: a hostile or broken bundler cannot make the
/// companion sign an operation that pays it more than this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GasCeilings {
    /// Highest `maxFeePerGas`, in wei.
    pub max_fee_per_gas: u128,
    /// Highest `preVerificationGas` (the part a bundler sets for itself).
    pub max_pre_verification_gas: u128,
    /// Highest sum of all gas limits of one operation.
    pub max_total_gas: u128,
    /// Highest `maxGasCost` (all gas limits × `maxFeePerGas`) of one operation, in wei.
    pub max_cost_wei: U256,
}

impl Default for GasCeilings {
    /// 1,000 gwei per gas; 1,000,000 pre-verification gas; 15,000,000 gas in all (half a
    /// mainnet block); 0.5 ETH per operation.
    fn default() -> Self {
        Self {
            max_fee_per_gas: 1_000_000_000_000,
            max_pre_verification_gas: 1_000_000,
            max_total_gas: 15_000_000,
            max_cost_wei: U256::from(500_000_000_000_000_000u128),
        }
    }
}

/// Which ceiling of [`GasCeilings`] an operation went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ceiling {
    /// `maxFeePerGas`.
    MaxFeePerGas,
    /// `maxPriorityFeePerGas` above `maxFeePerGas`.
    PriorityFee,
    /// `preVerificationGas`.
    PreVerificationGas,
    /// The sum of the gas limits.
    TotalGas,
    /// The operation's maximum cost.
    Cost,
}

impl Ceiling {
    /// A stable name, for error bodies.
    pub fn name(self) -> &'static str {
        match self {
            Ceiling::MaxFeePerGas => "maxFeePerGas",
            Ceiling::PriorityFee => "maxPriorityFeePerGas",
            Ceiling::PreVerificationGas => "preVerificationGas",
            Ceiling::TotalGas => "totalGas",
            Ceiling::Cost => "maxGasCost",
        }
    }
}

impl std::fmt::Display for Ceiling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl GasCeilings {
    /// No ceiling at all: for harnesses that build the operations an attacker would (absurd gas
    /// values included) to show the chain refusing them. Never for a companion.
    pub const NONE: GasCeilings = GasCeilings {
        max_fee_per_gas: u128::MAX,
        max_pre_verification_gas: u128::MAX,
        max_total_gas: u128::MAX,
        max_cost_wei: U256::MAX,
    };

    /// Checks `op`'s fees and gas against the ceilings.
    pub fn check(&self, op: &UserOperation) -> Result<(), ChainError> {
        let over = |ceiling, value: U256, limit: U256| {
            Err(ChainError::AboveCeiling {
                ceiling,
                value,
                limit,
            })
        };
        if op.max_fee_per_gas > self.max_fee_per_gas {
            return over(
                Ceiling::MaxFeePerGas,
                U256::from(op.max_fee_per_gas),
                U256::from(self.max_fee_per_gas),
            );
        }
        if op.max_priority_fee_per_gas > op.max_fee_per_gas {
            return over(
                Ceiling::PriorityFee,
                U256::from(op.max_priority_fee_per_gas),
                U256::from(op.max_fee_per_gas),
            );
        }
        if op.pre_verification_gas > U256::from(self.max_pre_verification_gas) {
            return over(
                Ceiling::PreVerificationGas,
                op.pre_verification_gas,
                U256::from(self.max_pre_verification_gas),
            );
        }
        let total = op
            .pre_verification_gas
            .saturating_add(U256::from(op.verification_gas_limit))
            .saturating_add(U256::from(op.call_gas_limit))
            .saturating_add(U256::from(op.paymaster_verification_gas_limit))
            .saturating_add(U256::from(op.paymaster_post_op_gas_limit));
        if total > U256::from(self.max_total_gas) {
            return over(Ceiling::TotalGas, total, U256::from(self.max_total_gas));
        }
        let cost = total.saturating_mul(U256::from(op.max_fee_per_gas));
        if cost > self.max_cost_wei {
            return over(Ceiling::Cost, cost, self.max_cost_wei);
        }
        Ok(())
    }
}

/// Headroom added to the bundler's gas estimates, in percent of each estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GasBuffers {
    /// Added to `verificationGasLimit` (validation: signature recovery differs slightly between
    /// the stub and the real signature, and state may change before inclusion).
    pub verification_percent: u32,
    /// Added to `callGasLimit`. Kept small: EntryPoint v0.7/v0.8 charge 10 % of unused execution
    /// gas above 40 000.
    pub call_percent: u32,
    /// Added to `preVerificationGas` (calldata costs and bundler overhead may move).
    pub pre_verification_percent: u32,
}

impl Default for GasBuffers {
    /// 20 % verification, 10 % call, 5 % pre-verification.
    fn default() -> Self {
        Self {
            verification_percent: 20,
            call_percent: 10,
            pre_verification_percent: 5,
        }
    }
}

impl GasBuffers {
    /// `limits` with the buffers added.
    pub fn apply(&self, limits: GasLimits) -> GasLimits {
        fn add(v: u128, pct: u32) -> u128 {
            v.saturating_add(v.saturating_mul(u128::from(pct)) / 100)
        }
        GasLimits {
            pre_verification_gas: limits.pre_verification_gas.saturating_add(
                limits.pre_verification_gas * U256::from(self.pre_verification_percent)
                    / U256::from(100),
            ),
            verification_gas_limit: add(limits.verification_gas_limit, self.verification_percent),
            call_gas_limit: add(limits.call_gas_limit, self.call_percent),
            ..limits
        }
    }
}

/// What [`ChainClient::connect`] needs.
#[derive(Debug, Clone)]
pub struct ChainConfig {
    /// The node's JSON-RPC URL.
    pub rpc_url: reqwest::Url,
    /// The bundler's JSON-RPC URL.
    pub bundler_url: reqwest::Url,
    /// The EntryPoint (version and address).
    pub entry_point: EntryPoint,
    /// The `AgentAccountFactory` of this EntryPoint.
    pub factory: Address,
    /// The `SessionKeyValidator`.
    pub validator: Address,
    /// The chain id the node and bundler must report, if known in advance.
    pub expected_chain_id: Option<u64>,
    /// Headroom on gas estimates.
    pub gas_buffers: GasBuffers,
    /// Retries of `eth_sendUserOperation`.
    pub retry: RetryPolicy,
    /// Timeouts and body cap of every node and bundler request.
    pub http: HttpLimits,
    /// Ceilings on the gas and fees of every operation built ([`ChainClient::prepare`]).
    pub ceilings: GasCeilings,
    /// The account implementation EOAs delegate to with EIP-7702 (`Eip7702Account`, an ERC-7579
    /// account whose signer is the EOA itself); `None` turns EIP-7702 delegation off.
    pub eip7702_delegate: Option<Address>,
}

impl ChainConfig {
    /// A configuration with default buffers and retries.
    pub fn new(
        rpc_url: reqwest::Url,
        bundler_url: reqwest::Url,
        entry_point: EntryPoint,
        factory: Address,
        validator: Address,
    ) -> Self {
        Self {
            rpc_url,
            bundler_url,
            entry_point,
            factory,
            validator,
            expected_chain_id: None,
            gas_buffers: GasBuffers::default(),
            retry: RetryPolicy::default(),
            http: HttpLimits::default(),
            ceilings: GasCeilings::default(),
            eip7702_delegate: None,
        }
    }
}

/// EIP-1559 fees of an operation or transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fees {
    /// Maximum fee per gas, in wei.
    pub max_fee_per_gas: u128,
    /// Maximum priority fee per gas, in wei.
    pub max_priority_fee_per_gas: u128,
}

/// Where [`ChainClient::fees`] got its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeeSource {
    /// The bundler's `pimlico_getUserOperationGasPrice` (its "fast" level).
    Bundler,
    /// The node: `eth_maxPriorityFeePerGas`, and twice the latest base fee plus that.
    Node,
}

/// The deployment of an account in its first operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountInit {
    /// The owner the factory sets.
    pub owner: Address,
    /// The factory salt.
    pub salt: U256,
}

/// Which nonce an operation uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceChoice {
    /// The next nonce of this key on chain (`EntryPoint.getNonce(sender, key)`).
    Next(NonceKey),
    /// Exactly this nonce (key and sequence), e.g. the one after an operation still in flight.
    Exact(U256),
}

/// What to build: see [`ChainClient::prepare`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpRequest {
    /// The account.
    pub sender: Address,
    /// How to deploy the account if it has no code yet (ignored once it has code).
    pub init: Option<AccountInit>,
    /// The nonce.
    pub nonce: NonceChoice,
    /// The calls the account makes (on `AgentAccount` `execute` for one, `executeBatch` for
    /// several; with [`ChainClient::prepare_for`] the kind's `execute`).
    pub calls: Vec<Call>,
    /// A stub signature of the final length and layout, for gas estimation (see
    /// [`crate::signature`]).
    pub stub_signature: Bytes,
    /// Gas limits to use as they are, without asking the bundler (`None`: estimate, the usual
    /// case). Tests use it to build operations a bundler's estimation would refuse.
    pub gas: Option<GasLimits>,
}

/// An operation ready to be signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedOp {
    /// The operation, with gas and fees, still carrying the stub signature.
    pub op: UserOperation,
    /// Its userOpHash for this EntryPoint and chain (what the signer signs, EIP-191).
    pub user_op_hash: B256,
    /// Whether the operation deploys the account.
    pub deploys_account: bool,
}

impl PreparedOp {
    /// The operation with its real signature (the hash does not change).
    pub fn signed(&self, signature: impl Into<Bytes>) -> UserOperation {
        self.op.clone().with_signature(signature)
    }
}

/// The result of [`ChainClient::revoke_session`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// The transaction was mined and succeeded.
    Revoked {
        /// The transaction hash.
        tx_hash: B256,
        /// Its block.
        block_number: u64,
    },
    /// The session was already revoked on chain; nothing was sent.
    AlreadyRevoked,
}

/// How far back [`ChainClient::user_operation_events`] looks without a starting block: about a
/// day and a half of 12-second blocks (node providers often cap a log query's range near this).
pub const EVENT_LOOKBACK_BLOCKS: u64 = 10_000;

/// One `UserOperationEvent` of the EntryPoint: an operation executed on chain (see
/// [`ChainClient::user_operation_events`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpEvent {
    /// The operation's userOpHash.
    pub user_op_hash: B256,
    /// The account.
    pub sender: Address,
    /// The paymaster (zero without one).
    pub paymaster: Address,
    /// The operation's nonce.
    pub nonce: U256,
    /// Whether its execution succeeded.
    pub success: bool,
    /// What it paid, in wei.
    pub actual_gas_cost: U256,
    /// Gas it used.
    pub actual_gas_used: U256,
    /// The bundle transaction.
    pub transaction_hash: Option<B256>,
    /// Its block.
    pub block_number: Option<u64>,
    /// Its block hash.
    pub block_hash: Option<B256>,
}

impl OpEvent {
    /// The event as a receipt of the operation on `entry_point` (without the transaction's logs
    /// and revert data, which the event does not carry), or `None` without a transaction.
    pub fn to_receipt(&self, entry_point: Address) -> Option<UserOperationReceipt> {
        Some(UserOperationReceipt {
            user_op_hash: self.user_op_hash,
            entry_point,
            sender: self.sender,
            nonce: self.nonce,
            paymaster: Some(self.paymaster),
            actual_gas_cost: self.actual_gas_cost,
            actual_gas_used: self.actual_gas_used,
            success: self.success,
            reason: None,
            logs: Vec::new(),
            receipt: crate::bundler::TransactionReceipt {
                transaction_hash: self.transaction_hash?,
                block_number: U256::from(self.block_number?),
                block_hash: self.block_hash,
                status: None,
                other: Default::default(),
            },
        })
    }
}

const BUNDLER_FEES_UNKNOWN: u8 = 0;
const BUNDLER_FEES_YES: u8 = 1;
const BUNDLER_FEES_NO: u8 = 2;

/// One EntryPoint on one chain: see the module docs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ChainClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    provider: DynProvider,
    bundler: BundlerClient,
    config: ChainConfig,
    chain_id: u64,
    bundler_fees: AtomicU8,
    redact: Vec<String>,
    node: NodeClient,
    gas_cache: GasCache,
    recent_fees: RecentFees,
}

impl ChainClient {
    /// Connects to the node and the bundler and checks the set-up (chain ids, supported
    /// EntryPoint, factory and validator code, the factory's EntryPoint and validator).
    pub async fn connect(config: ChainConfig) -> Result<Self, ChainError> {
        let provider =
            node_provider(config.rpc_url.clone(), config.http).map_err(|e| ChainError::Node {
                during: "building the HTTP client",
                message: e.without_url().to_string(),
            })?;
        let bundler = BundlerClient::with_limits(config.bundler_url.clone(), config.http)?;
        let redact = redactions(&[&config.rpc_url, &config.bundler_url]);
        let validator = config.validator;
        let provider_for_node = provider.clone();
        let mut client = Inner {
            provider,
            bundler,
            config,
            chain_id: 0,
            bundler_fees: AtomicU8::new(BUNDLER_FEES_UNKNOWN),
            node: NodeClient::from_parts(provider_for_node, validator, 0, redact.clone()),
            redact,
            gas_cache: GasCache::new(),
            recent_fees: RecentFees::default(),
        };
        client.chain_id = client.check_setup().await?;
        client.node = NodeClient::from_parts(
            client.provider.clone(),
            validator,
            client.chain_id,
            client.redact.clone(),
        );
        Ok(Self {
            inner: Arc::new(client),
        })
    }

    /// The chain id (checked at connection).
    pub fn chain_id(&self) -> u64 {
        self.inner.chain_id
    }

    /// The EntryPoint.
    pub fn entry_point(&self) -> EntryPoint {
        self.inner.config.entry_point
    }

    /// The account factory.
    pub fn factory(&self) -> Address {
        self.inner.config.factory
    }

    /// The session key validator.
    pub fn validator(&self) -> Address {
        self.inner.config.validator
    }

    /// The node provider.
    pub fn provider(&self) -> &DynProvider {
        &self.inner.provider
    }

    /// The bundler client.
    pub fn bundler(&self) -> &BundlerClient {
        &self.inner.bundler
    }

    /// The configuration.
    pub fn config(&self) -> &ChainConfig {
        &self.inner.config
    }

    fn node_err(&self, during: &'static str, e: impl std::fmt::Display) -> ChainError {
        self.inner.node_err(during, e)
    }

    /// The account address of (`owner`, `salt`): the factory's `getAddress`.
    pub async fn account_address(&self, owner: Address, salt: U256) -> Result<Address, ChainError> {
        AgentAccountFactory::new(self.factory(), self.provider())
            .getAddress(owner, salt)
            .call()
            .await
            .map_err(|e| self.node_err("calling factory.getAddress", e))
    }

    /// Whether `address` has code.
    pub async fn has_code(&self, address: Address) -> Result<bool, ChainError> {
        self.provider()
            .get_code_at(address)
            .await
            .map(|c| !c.is_empty())
            .map_err(|e| self.node_err("reading code", e))
    }

    /// What `address` holds as code ([`AccountCode`]).
    pub async fn account_code(&self, address: Address) -> Result<AccountCode, ChainError> {
        self.provider()
            .get_code_at(address)
            .await
            .map(|c| AccountCode::of(&c))
            .map_err(|e| self.node_err("reading code", e))
    }

    /// `EntryPoint.getNonce(sender, key)`: key ‖ next sequence.
    pub async fn nonce(&self, sender: Address, key: NonceKey) -> Result<U256, ChainError> {
        IEntryPointV07::new(self.entry_point().address, self.provider())
            .getNonce(sender, key.into())
            .call()
            .await
            .map_err(|e| self.node_err("calling EntryPoint.getNonce", e))
    }

    /// `EntryPoint.getNonce(sender, key)` as of block `block`: what the chain's nonce was when a
    /// state read at that block (a session snapshot) was taken.
    pub async fn nonce_at(
        &self,
        sender: Address,
        key: NonceKey,
        block: u64,
    ) -> Result<U256, ChainError> {
        IEntryPointV07::new(self.entry_point().address, self.provider())
            .getNonce(sender, key.into())
            .call()
            .block(alloy::eips::BlockId::number(block))
            .await
            .map_err(|e| self.node_err("calling EntryPoint.getNonce", e))
    }

    /// The native balance of `address`.
    pub async fn balance(&self, address: Address) -> Result<U256, ChainError> {
        self.inner.node.balance(address).await
    }

    /// Fees for a UserOperation: the bundler's "fast" `pimlico_getUserOperationGasPrice` when it
    /// offers the method, else the node's (see [`FeeSource`]). A bundler without the method is
    /// remembered and not asked again.
    pub async fn fees(&self) -> Result<(Fees, FeeSource), ChainError> {
        let (fees, source) = self.fresh_fees().await?;
        self.inner.recent_fees.put(std::time::Instant::now(), fees);
        Ok((fees, source))
    }

    /// The fees [`ChainClient::fees`] last read, when read at most `max_age` ago; else read now.
    /// For operations whose submission is answered with fresh fees if the bundler refuses these
    /// ([`crate::gas_reuse::is_gas_refusal`]).
    pub async fn recent_fees(&self, max_age: Duration) -> Result<Fees, ChainError> {
        match self
            .inner
            .recent_fees
            .get(std::time::Instant::now(), max_age)
        {
            Some(fees) => Ok(fees),
            None => Ok(self.fees().await?.0),
        }
    }

    async fn fresh_fees(&self) -> Result<(Fees, FeeSource), ChainError> {
        if self.inner.bundler_fees.load(Ordering::Relaxed) != BUNDLER_FEES_NO {
            match self.bundler().user_operation_gas_price().await {
                Ok(prices) => {
                    self.inner
                        .bundler_fees
                        .store(BUNDLER_FEES_YES, Ordering::Relaxed);
                    let (max_fee, priority) = prices.fast.as_u128s()?;
                    return Ok((
                        Fees {
                            max_fee_per_gas: max_fee,
                            max_priority_fee_per_gas: priority,
                        },
                        FeeSource::Bundler,
                    ));
                }
                Err(e) if e.is_method_not_found() => {
                    self.inner
                        .bundler_fees
                        .store(BUNDLER_FEES_NO, Ordering::Relaxed);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok((self.node_fees().await?, FeeSource::Node))
    }

    /// Fees from the node (see [`NodeClient::node_fees`]).
    pub async fn node_fees(&self) -> Result<Fees, ChainError> {
        self.inner.node.node_fees().await
    }

    /// Builds an operation: deployment if needed, nonce, call data, fees, gas (estimated with
    /// the stub signature, plus the configured buffers), and its userOpHash. Sign
    /// [`PreparedOp::user_op_hash`] and put the signature in with [`PreparedOp::signed`].
    pub async fn prepare(&self, request: OpRequest) -> Result<PreparedOp, ChainError> {
        self.prepare_for(AccountKind::AgentAccount, request).await
    }

    /// [`ChainClient::prepare`] for an account of `kind`: the calls encoded with the kind's
    /// `execute` ([`AccountKind::encode_calls`]). An ERC-7579 account must already be deployed
    /// (`request.init` is [`Erc7579Error::FactoryInit`]).
    pub async fn prepare_for(
        &self,
        kind: AccountKind,
        request: OpRequest,
    ) -> Result<PreparedOp, ChainError> {
        self.prepare_delegating(kind, request, None).await
    }

    /// [`ChainClient::prepare_for`], the operation carrying `delegation` (an EIP-7702
    /// authorisation of the sender, with a stub signature: estimation does not check it, and the
    /// userOpHash binds only its delegate) when given.
    async fn prepare_delegating(
        &self,
        kind: AccountKind,
        request: OpRequest,
        delegation: Option<SignedAuthorization>,
    ) -> Result<PreparedOp, ChainError> {
        if kind == AccountKind::Erc7579 && request.init.is_some() {
            return Err(Erc7579Error::FactoryInit.into());
        }
        let call_data = kind.encode_calls(&request.calls)?;
        let (deployed, nonce, (fees, _)) = tokio::try_join!(
            self.has_code(request.sender),
            async {
                match request.nonce {
                    NonceChoice::Next(key) => self.nonce(request.sender, key).await,
                    NonceChoice::Exact(n) => Ok(n),
                }
            },
            self.fees(),
        )?;
        let mut op = UserOperation::new(request.sender, nonce, call_data)
            .with_fees(fees.max_fee_per_gas, fees.max_priority_fee_per_gas)
            .with_signature(request.stub_signature);
        if let Some(auth) = delegation {
            op = op.with_eip7702(auth);
        }
        let deploys_account = !deployed && request.init.is_some();
        if let (false, Some(init)) = (deployed, request.init) {
            let expected = self.account_address(init.owner, init.salt).await?;
            if expected != request.sender {
                return Err(ChainError::SenderMismatch {
                    sender: request.sender,
                    expected,
                });
            }
            op = op.with_factory(self.factory(), factory_data(init.owner, init.salt));
        }
        let limits = match request.gas {
            Some(limits) => limits,
            None => {
                let estimate = self
                    .bundler()
                    .estimate_user_operation_gas(&op, self.entry_point().address)
                    .await?;
                self.inner
                    .config
                    .gas_buffers
                    .apply(GasLimits::try_from(&estimate)?)
            }
        };
        op = op.with_gas(limits);
        self.inner.config.ceilings.check(&op)?;
        let user_op_hash = self.entry_point().user_op_hash(&op, self.chain_id())?;
        Ok(PreparedOp {
            op,
            user_op_hash,
            deploys_account,
        })
    }

    /// `prepared` with its `verificationGasLimit` raised to `verification_gas_limit` (never
    /// lowered): the userOpHash recomputed and the gas ceilings checked again.
    pub fn with_verification_gas(
        &self,
        prepared: PreparedOp,
        verification_gas_limit: u128,
    ) -> Result<PreparedOp, ChainError> {
        let mut op = prepared.op;
        op.verification_gas_limit = op.verification_gas_limit.max(verification_gas_limit);
        self.inner.config.ceilings.check(&op)?;
        let user_op_hash = self.entry_point().user_op_hash(&op, self.chain_id())?;
        Ok(PreparedOp {
            op,
            user_op_hash,
            deploys_account: prepared.deploys_account,
        })
    }

    /// The owner's operation granting `grants` on the account of (`owner`, `salt`):
    /// `account.execute(validator, 0, grantSession(…))` for one grant, `executeBatch` of such
    /// calls for several, deploying the account in the same operation when it has no code yet.
    /// Uses the owner's nonce key 0 and the 65-byte owner stub signature.
    pub async fn prepare_grants(
        &self,
        owner: Address,
        salt: U256,
        grants: &[SessionGrant],
    ) -> Result<PreparedOp, ChainError> {
        let account = self.account_address(owner, salt).await?;
        for grant in grants {
            grant.validate(account, self.validator(), self.entry_point().address)?;
            for address in grant.needs_code() {
                if !self.has_code(address).await? {
                    return Err(InvalidGrant::NotAContract(address).into());
                }
            }
        }
        self.prepare(OpRequest {
            sender: account,
            init: Some(AccountInit { owner, salt }),
            nonce: NonceChoice::Next(NonceKey::OWNER),
            calls: grants
                .iter()
                .map(|g| g.owner_call(self.validator()))
                .collect(),
            stub_signature: crate::signature::stub_owner_signature(),
            gas: None,
        })
        .await
    }

    /// An agent's operation making `calls` from `account`: the agent's own nonce key
    /// ([`NonceKey::for_agent`]) unless `nonce` is given, and the 106-byte session stub
    /// signature naming `account` and `agent_key`.
    pub async fn prepare_agent_op(
        &self,
        account: Address,
        agent_key: Address,
        calls: Vec<Call>,
        nonce: Option<U256>,
    ) -> Result<PreparedOp, ChainError> {
        self.prepare(OpRequest {
            sender: account,
            init: None,
            nonce: nonce.map_or(
                NonceChoice::Next(NonceKey::for_agent(agent_key)),
                NonceChoice::Exact,
            ),
            calls,
            stub_signature: crate::signature::stub_session_signature(account, agent_key),
            gas: None,
        })
        .await
    }

    /// The kind of `account`, detected on chain (see [`NodeClient::account_kind`]).
    pub async fn account_kind(&self, account: Address) -> Result<Option<AccountKind>, ChainError> {
        self.inner.node.account_kind(account).await
    }

    /// The validator's module state for `account` (see [`NodeClient::module_state`]).
    pub async fn module_state(&self, account: Address) -> Result<ModuleState, ChainError> {
        self.inner.node.module_state(account).await
    }

    /// Where `agent_key`'s operations go on `account` of `kind`: its own key on `AgentAccount`;
    /// on an ERC-7579 account the lane the validator gave it at its first grant there (read on
    /// chain; [`ChainError::NoSession`] when it was never granted one).
    pub async fn agent_lane(
        &self,
        kind: AccountKind,
        account: Address,
        agent_key: Address,
    ) -> Result<AgentLane, ChainError> {
        match kind {
            AccountKind::AgentAccount => Ok(AgentLane::Key(agent_key)),
            AccountKind::Erc7579 => match self.inner.node.session_lane(account, agent_key).await? {
                Some(lane) => Ok(AgentLane::Module {
                    validator: self.validator(),
                    lane,
                }),
                None => Err(ChainError::NoSession {
                    account,
                    key: agent_key,
                }),
            },
        }
    }

    /// An agent's operation making `calls` from `account` on `lane` (which gives the account's
    /// kind): callData of that kind, the lane's nonce key of period `period_index` (0 without a
    /// period) unless `nonce` is given, and the 106-byte session stub signature naming `account`
    /// and `agent_key`. [`ChainClient::prepare_agent_op`] is this on `AgentAccount`, period 0.
    pub async fn prepare_agent_op_on(
        &self,
        account: Address,
        agent_key: Address,
        lane: AgentLane,
        period_index: u64,
        calls: Vec<Call>,
        nonce: Option<U256>,
    ) -> Result<PreparedOp, ChainError> {
        let nonce = match nonce {
            Some(n) => NonceChoice::Exact(n),
            None => NonceChoice::Next(lane.key(period_index).map_err(Erc7579Error::from)?),
        };
        self.prepare_for(
            lane.kind(),
            OpRequest {
                sender: account,
                init: None,
                nonce,
                calls,
                stub_signature: crate::signature::stub_session_signature(account, agent_key),
                gas: None,
            },
        )
        .await
    }

    /// The gas limits of agent operations kept per call shape (see [`crate::gas_reuse`]).
    pub fn gas_cache(&self) -> &GasCache {
        &self.inner.gas_cache
    }

    /// Whether `call_data` run by `account` as the EntryPoint runs an operation's execution
    /// (a call from the EntryPoint, at the latest block) completes with `call_gas_limit` gas for
    /// the account's frame: `eth_call` with that plus the call's intrinsic gas. `Ok(false)` when
    /// it reverts or runs out of gas; an error when the node could not be asked. Nothing in that
    /// frame is warmer than in the EntryPoint's own call (only the account and the EntryPoint
    /// are, as there), so what completes here completes there on the same state.
    pub async fn execution_fits(
        &self,
        account: Address,
        call_data: &Bytes,
        call_gas_limit: u128,
    ) -> Result<bool, ChainError> {
        let gas = u64::try_from(call_gas_limit)
            .unwrap_or(u64::MAX)
            .saturating_add(intrinsic_gas(call_data));
        let request = alloy::rpc::types::TransactionRequest::default()
            .from(self.entry_point().address)
            .to(account)
            .input(call_data.clone().into())
            .gas_limit(gas);
        match self.provider().call(request).await {
            Ok(_) => Ok(true),
            // The node ran it and it failed (a revert, out of gas).
            Err(alloy::transports::RpcError::ErrorResp(_)) => Ok(false),
            Err(e) => Err(self.node_err("calling the account as the EntryPoint", e)),
        }
    }

    /// An agent's operation making `calls` from `account` of `kind` with `nonce`, `fees` and the
    /// gas `limits` given (reused, see [`crate::gas_reuse`]): no node or bundler call. The same
    /// callData, stub signature, ceilings and userOpHash as
    /// [`ChainClient::prepare_agent_op_on`].
    #[allow(clippy::too_many_arguments)]
    pub fn assemble_agent_op(
        &self,
        kind: AccountKind,
        account: Address,
        agent_key: Address,
        calls: &[Call],
        nonce: U256,
        fees: Fees,
        limits: GasLimits,
    ) -> Result<PreparedOp, ChainError> {
        let call_data = kind.encode_calls(calls)?;
        let op = UserOperation::new(account, nonce, call_data)
            .with_fees(fees.max_fee_per_gas, fees.max_priority_fee_per_gas)
            .with_signature(crate::signature::stub_session_signature(account, agent_key))
            .with_gas(limits);
        self.inner.config.ceilings.check(&op)?;
        let user_op_hash = self.entry_point().user_op_hash(&op, self.chain_id())?;
        Ok(PreparedOp {
            op,
            user_op_hash,
            deploys_account: false,
        })
    }

    /// Checks that `account` is an ERC-7579 account supporting validator modules.
    async fn require_erc7579(&self, account: Address) -> Result<(), ChainError> {
        let found = match self.account_kind(account).await? {
            Some(AccountKind::Erc7579) => return Ok(()),
            Some(AccountKind::AgentAccount) => "agent-account",
            None if !self.has_code(account).await? => "no code",
            None => "unknown",
        };
        Err(Erc7579Error::NotErc7579 { account, found }.into())
    }

    /// The owner's operation on the ERC-7579 account `account` that installs this validator as
    /// its validator module (unless the account says it is installed already) and grants `grants`,
    /// in one batch: `execute(batch, [installModule(1, validator, ""), validator.grantSession(g),
    /// …])`. On the owner's nonce key 0 (which names no module, so the account checks the owner's
    /// own signature) with the 65-byte owner stub signature. Refused before anything is built when
    /// the account is not ERC-7579 ([`Erc7579Error::NotErc7579`]) or a grant is invalid for it.
    /// Each key gets its lane at its first grant on the account ([`ChainClient::agent_lane`]).
    pub async fn prepare_erc7579_grants(
        &self,
        account: Address,
        grants: &[SessionGrant],
    ) -> Result<PreparedOp, ChainError> {
        self.require_erc7579(account).await?;
        for grant in grants {
            grant.validate(account, self.validator(), self.entry_point().address)?;
            for address in grant.needs_code() {
                if !self.has_code(address).await? {
                    return Err(InvalidGrant::NotAContract(address).into());
                }
            }
        }
        let mut calls = Vec::with_capacity(grants.len() + 1);
        if !self.inner.node.is_module_installed(account).await? {
            calls.push(crate::erc7579::install_module_call(
                account,
                self.validator(),
            ));
        }
        calls.extend(grants.iter().map(|g| g.owner_call(self.validator())));
        self.prepare_for(
            AccountKind::Erc7579,
            OpRequest {
                sender: account,
                init: None,
                nonce: NonceChoice::Next(NonceKey::OWNER),
                calls,
                stub_signature: crate::signature::stub_owner_signature(),
                gas: None,
            },
        )
        .await
    }

    /// The first operation of the owner's EOA `eoa` as an ERC-7579 account, delegating with
    /// EIP-7702 to the configured implementation ([`ChainConfig::eip7702_delegate`]) in the same
    /// operation: initCode is the EIP-7702 marker, the operation carries an authorisation of
    /// `eoa` for this chain, the delegate and the EOA's current account nonce (with a stub
    /// signature until the owner signs it; the userOpHash binds the delegate, not the
    /// signature), and its calls install this validator as the account's validator module and
    /// grant `grants`, in one ERC-7579 batch, on the owner's nonce key 0 (the EOA's own key
    /// signs, raw ECDSA over the userOpHash). Only on EntryPoint v0.8; `eoa` must have no code
    /// ([`Erc7579Error::NotAnEoa`]: once delegated it is an ERC-7579 account, granted on with
    /// [`ChainClient::prepare_erc7579_grants`]). The EOA pays the operation's prefund.
    pub async fn prepare_eip7702_grants(
        &self,
        eoa: Address,
        grants: &[SessionGrant],
    ) -> Result<(PreparedOp, Authorization), ChainError> {
        if self.entry_point().version != crate::userop::EntryPointVersion::V08 {
            return Err(Erc7579Error::Eip7702Unavailable {
                needs: "EntryPoint v0.8",
            }
            .into());
        }
        let delegate =
            self.inner
                .config
                .eip7702_delegate
                .ok_or(Erc7579Error::Eip7702Unavailable {
                    needs: "a configured EIP-7702 account implementation",
                })?;
        match self.account_code(eoa).await? {
            AccountCode::Empty => {}
            AccountCode::Delegated(to) => {
                return Err(Erc7579Error::NotAnEoa {
                    account: eoa,
                    found: format!("a delegation to {to}"),
                }
                .into())
            }
            AccountCode::Contract => {
                return Err(Erc7579Error::NotAnEoa {
                    account: eoa,
                    found: "a contract".into(),
                }
                .into())
            }
        }
        for grant in grants {
            grant.validate(eoa, self.validator(), self.entry_point().address)?;
            for address in grant.needs_code() {
                if !self.has_code(address).await? {
                    return Err(InvalidGrant::NotAContract(address).into());
                }
            }
        }
        let account_nonce = self
            .provider()
            .get_transaction_count(eoa)
            .await
            .map_err(|e| self.node_err("reading the EOA's nonce", e))?;
        let authorization = Authorization {
            chain_id: U256::from(self.chain_id()),
            address: delegate,
            nonce: account_nonce,
        };
        // r = s = 1: a well-formed stand-in; nothing checks it before the owner signs.
        let stub = SignedAuthorization::new_unchecked(
            authorization.clone(),
            0,
            U256::from(1),
            U256::from(1),
        );
        let mut calls = vec![crate::erc7579::install_module_call(eoa, self.validator())];
        calls.extend(grants.iter().map(|g| g.owner_call(self.validator())));
        let prepared = self
            .prepare_delegating(
                AccountKind::Erc7579,
                OpRequest {
                    sender: eoa,
                    init: None,
                    nonce: NonceChoice::Next(NonceKey::OWNER),
                    calls,
                    stub_signature: crate::signature::stub_owner_signature(),
                    gas: None,
                },
                Some(stub),
            )
            .await?;
        Ok((prepared, authorization))
    }

    /// The owner's operation uninstalling this validator from the ERC-7579 account `account`
    /// (`execute(single, account.uninstallModule(1, validator, ""))`), which ends every session the
    /// account granted on the module path. Owner's nonce key 0, 65-byte owner stub signature.
    /// [`Erc7579Error::ModuleNotInstalled`] when the account does not have it installed.
    pub async fn prepare_erc7579_uninstall(
        &self,
        account: Address,
    ) -> Result<PreparedOp, ChainError> {
        self.require_erc7579(account).await?;
        if !self.inner.node.is_module_installed(account).await? {
            return Err(Erc7579Error::ModuleNotInstalled { account }.into());
        }
        self.prepare_for(
            AccountKind::Erc7579,
            OpRequest {
                sender: account,
                init: None,
                nonce: NonceChoice::Next(NonceKey::OWNER),
                calls: vec![crate::erc7579::uninstall_module_call(
                    account,
                    self.validator(),
                )],
                stub_signature: crate::signature::stub_owner_signature(),
                gas: None,
            },
        )
        .await
    }

    /// The nonce for the next operation under `guard` (see [`crate::nonce`]): the EntryPoint's
    /// next nonce for the guard's key, once [`ChainClient::settle_in_flight`] has let the chain
    /// pass (or the bundler include) the operation the guard last submitted.
    pub async fn next_nonce(
        &self,
        guard: &mut NonceGuard,
        timeout: Duration,
    ) -> Result<U256, ChainError> {
        self.settle_in_flight(guard, timeout).await?;
        self.nonce(guard.sender(), guard.key()).await
    }

    /// Waits up to `timeout` for the inclusion of the operation `guard` last submitted (under
    /// whichever key) when the chain has not passed its nonce yet, then forgets it. On timeout the
    /// record is cleared too (so a dropped operation does not block for ever) and the receipt
    /// timeout is returned. Reading a session after this sees what that operation spent.
    pub async fn settle_in_flight(
        &self,
        guard: &mut NonceGuard,
        timeout: Duration,
    ) -> Result<(), ChainError> {
        let Some(in_flight) = guard.in_flight() else {
            return Ok(());
        };
        let (key, _) = NonceKey::split(in_flight.nonce);
        let on_chain = self.nonce(guard.sender(), key).await?;
        if guard.blocks(on_chain).is_none() {
            guard.clear();
            return Ok(());
        }
        let expected = ExpectedReceipt {
            user_op_hash: in_flight.user_op_hash,
            entry_point: self.entry_point().address,
            sender: guard.sender(),
            nonce: in_flight.nonce,
        };
        let waited = self.wait_for_receipt(&expected, timeout).await;
        guard.clear();
        waited.map(|_| ())
    }

    /// Submits a signed operation (see [`BundlerClient::submit`]: transient failures are retried
    /// with the identical operation, and the userOpHash returned must equal the local one).
    pub async fn submit(&self, op: &UserOperation) -> Result<Submission, ChainError> {
        let hash = self.entry_point().user_op_hash(op, self.chain_id())?;
        Ok(self
            .bundler()
            .submit(
                op,
                self.entry_point().address,
                hash,
                self.inner.config.retry,
            )
            .await?)
    }

    /// What the receipt of `op` (userOpHash `user_op_hash`) must say on this EntryPoint.
    pub fn expected_receipt(&self, op: &UserOperation, user_op_hash: B256) -> ExpectedReceipt {
        ExpectedReceipt::of(op, user_op_hash, self.entry_point().address)
    }

    /// The receipt of the operation `expected` describes, checked against it (hash, EntryPoint,
    /// sender, nonce), or `None` while there is none.
    pub async fn receipt(
        &self,
        expected: &ExpectedReceipt,
    ) -> Result<Option<UserOperationReceipt>, ChainError> {
        Ok(self.bundler().checked_receipt(expected).await?)
    }

    /// The EntryPoint's `UserOperationEvent`s from block `from_block` on (the latest block when
    /// `None`: the last [`EVENT_LOOKBACK_BLOCKS`]) for userOpHash `user_op_hash` (when given) of
    /// `sender`, read through the node: what was executed on chain, whatever bundler included
    /// it. Events of another sender, or without a readable body, are left out.
    pub async fn user_operation_events(
        &self,
        sender: Address,
        user_op_hash: Option<B256>,
        from_block: Option<u64>,
    ) -> Result<Vec<OpEvent>, ChainError> {
        use alloy::sol_types::SolEvent;
        let from = match from_block {
            Some(b) => b,
            None => self
                .provider()
                .get_block_number()
                .await
                .map_err(|e| self.node_err("reading the latest block number", e))?
                .saturating_sub(EVENT_LOOKBACK_BLOCKS),
        };
        let mut filter = alloy::rpc::types::Filter::new()
            .address(self.entry_point().address)
            .event_signature(IEntryPointV07::UserOperationEvent::SIGNATURE_HASH)
            .topic2(sender.into_word())
            .from_block(from)
            .to_block(alloy::rpc::types::BlockNumberOrTag::Latest);
        if let Some(hash) = user_op_hash {
            filter = filter.topic1(hash);
        }
        let logs = self
            .provider()
            .get_logs(&filter)
            .await
            .map_err(|e| self.node_err("reading UserOperationEvent logs", e))?;
        Ok(logs
            .iter()
            .filter(|l| !l.removed && l.address() == self.entry_point().address)
            .filter_map(|l| {
                let ev = l.log_decode::<IEntryPointV07::UserOperationEvent>().ok()?;
                let d = ev.inner.data;
                (d.sender == sender).then_some(OpEvent {
                    user_op_hash: d.userOpHash,
                    sender: d.sender,
                    paymaster: d.paymaster,
                    nonce: d.nonce,
                    success: d.success,
                    actual_gas_cost: d.actualGasCost,
                    actual_gas_used: d.actualGasUsed,
                    transaction_hash: l.transaction_hash,
                    block_number: l.block_number,
                    block_hash: l.block_hash,
                })
            })
            .collect())
    }

    /// Waits for the receipt of the operation `expected` describes, checked against it, polling
    /// every 100 ms for at most `timeout`.
    pub async fn wait_for_receipt(
        &self,
        expected: &ExpectedReceipt,
        timeout: Duration,
    ) -> Result<UserOperationReceipt, ChainError> {
        Ok(self
            .bundler()
            .wait_for_receipt(expected, timeout, Duration::from_millis(100))
            .await?)
    }

    /// Reads the session of `key` on `account`, with `isTargetAllowed` for each of `targets`,
    /// all at the latest block (see [`NodeClient::read_session`]).
    pub async fn read_session(
        &self,
        account: Address,
        key: Address,
        targets: &[Address],
    ) -> Result<SessionSnapshot, ChainError> {
        self.inner.node.read_session(account, key, targets).await
    }

    /// What the pre-check of `calls` needs, in one read (see
    /// [`NodeClient::read_session_for_calls`]).
    pub async fn read_session_for_calls(
        &self,
        account: Address,
        key: Address,
        calls: &[Call],
        at: u64,
    ) -> Result<SessionSnapshot, ChainError> {
        self.inner
            .node
            .read_session_for_calls(account, key, calls, at)
            .await
    }

    /// What the pre-check of `calls` on an account of `kind` needs, in one block (see
    /// [`NodeClient::read_session_for_calls_on`]): the snapshot and the validator's path.
    pub async fn read_session_for_calls_on(
        &self,
        kind: AccountKind,
        account: Address,
        key: Address,
        calls: &[Call],
        at: u64,
    ) -> Result<(SessionSnapshot, crate::session::ValidatorPath), ChainError> {
        self.inner
            .node
            .read_session_for_calls_on(kind, account, key, calls, at)
            .await
    }

    /// [`ChainClient::read_session_for_calls_on`] and the EntryPoint's next nonce of
    /// `nonce_key` for `account` at the same block, read beside the session (see
    /// [`NodeClient::read_session_and_nonce_on`]): at the latest block, or with `block` =
    /// (number, timestamp) at that block.
    #[allow(clippy::too_many_arguments)]
    pub async fn read_session_and_nonce_on(
        &self,
        kind: AccountKind,
        account: Address,
        key: Address,
        calls: &[Call],
        at: u64,
        nonce_key: NonceKey,
        block: Option<(u64, u64)>,
    ) -> Result<(SessionSnapshot, crate::session::ValidatorPath, U256), ChainError> {
        let (snapshot, path, nonce) = self
            .inner
            .node
            .read_session_and_nonce_on(
                kind,
                account,
                key,
                calls,
                at,
                Some((self.entry_point().address, nonce_key)),
                block,
            )
            .await?;
        let nonce =
            nonce.ok_or_else(|| self.node_err("calling EntryPoint.getNonce", "no answer"))?;
        Ok((snapshot, path, nonce))
    }

    /// Revokes the session of `key` on `account` with the operator's `revokeSession`
    /// transaction (see [`NodeClient::revoke_session`]: needs only the node).
    pub async fn revoke_session<S: OperatorSigner + ?Sized>(
        &self,
        signer: &S,
        account: Address,
        key: Address,
        timeout: Duration,
    ) -> Result<RevokeOutcome, ChainError> {
        self.inner
            .node
            .revoke_session(signer, account, key, timeout)
            .await
    }

    /// The node-only part of this client (sessions, node fees, balances, revocation).
    pub fn node(&self) -> &NodeClient {
        &self.inner.node
    }
}

impl Inner {
    fn node_err(&self, during: &'static str, e: impl std::fmt::Display) -> ChainError {
        let mut message = e.to_string();
        for r in &self.redact {
            message = message.replace(r.as_str(), "<url>");
        }
        ChainError::Node { during, message }
    }

    /// The start-up checks of [`ChainClient::connect`]; returns the chain id.
    async fn check_setup(&self) -> Result<u64, ChainError> {
        let (node, bundler, supported) = tokio::try_join!(
            async {
                self.provider
                    .get_chain_id()
                    .await
                    .map_err(|e| self.node_err("calling eth_chainId", e))
            },
            async { Ok(self.bundler.chain_id().await?) },
            async { Ok(self.bundler.supported_entry_points().await?) },
        )?;
        let configured = self.config.expected_chain_id;
        if node != bundler || configured.is_some_and(|c| c != node) {
            return Err(ChainError::ChainIdMismatch {
                node,
                bundler,
                configured,
            });
        }
        let entry_point = self.config.entry_point.address;
        if !supported.contains(&entry_point) {
            return Err(ChainError::EntryPointNotSupported {
                entry_point,
                supported,
            });
        }
        for (what, address) in [
            ("entry point", entry_point),
            ("account factory", self.config.factory),
            ("session key validator", self.config.validator),
        ] {
            let code = self
                .provider
                .get_code_at(address)
                .await
                .map_err(|e| self.node_err("reading code", e))?;
            if code.is_empty() {
                return Err(ChainError::NoCode { what, address });
            }
        }
        let factory = AgentAccountFactory::new(self.config.factory, &self.provider);
        let (ep_call, validator_call) = (factory.entryPoint(), factory.validator());
        let (factory_entry_point, factory_validator) =
            tokio::try_join!(ep_call.call(), validator_call.call())
                .map_err(|e| self.node_err("reading the factory's settings", e))?;
        if factory_entry_point != entry_point || factory_validator != self.config.validator {
            return Err(ChainError::FactoryMismatch {
                factory: self.config.factory,
                factory_entry_point,
                factory_validator,
                entry_point,
                validator: self.config.validator,
            });
        }
        Ok(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_code_tells_a_delegation_from_a_contract() {
        let d = Address::repeat_byte(0xd1);
        assert_eq!(AccountCode::of(&[]), AccountCode::Empty);
        let mut designator = vec![0xef, 0x01, 0x00];
        designator.extend_from_slice(d.as_slice());
        assert_eq!(AccountCode::of(&designator), AccountCode::Delegated(d));
        // One byte short or long, another prefix: contract code.
        assert_eq!(AccountCode::of(&designator[..22]), AccountCode::Contract);
        designator.push(0);
        assert_eq!(AccountCode::of(&designator), AccountCode::Contract);
        let mut other = vec![0xef, 0x01, 0x01];
        other.extend_from_slice(d.as_slice());
        assert_eq!(AccountCode::of(&other), AccountCode::Contract);
        assert_eq!(AccountCode::of(&[0x60, 0x80]), AccountCode::Contract);
    }

    #[test]
    fn ceilings_refuse_each_excess_and_accept_the_limit() {
        let ceilings = GasCeilings {
            max_fee_per_gas: 100,
            max_pre_verification_gas: 1_000,
            max_total_gas: 10_000,
            max_cost_wei: U256::from(500_000),
        };
        let at_limit = UserOperation::new(Address::ZERO, U256::ZERO, Bytes::new())
            .with_fees(50, 50)
            .with_gas(GasLimits {
                pre_verification_gas: U256::from(1_000),
                verification_gas_limit: 4_000,
                call_gas_limit: 5_000,
                ..GasLimits::default()
            });
        ceilings.check(&at_limit).unwrap();
        let refused = |op: &UserOperation| match ceilings.check(op) {
            Err(ChainError::AboveCeiling { ceiling, .. }) => ceiling,
            other => panic!("{other:?}"),
        };
        let mut op = at_limit.clone();
        op.max_fee_per_gas = 101;
        assert_eq!(refused(&op), Ceiling::MaxFeePerGas);
        let mut op = at_limit.clone();
        op.max_priority_fee_per_gas = 51;
        assert_eq!(refused(&op), Ceiling::PriorityFee);
        let mut op = at_limit.clone();
        op.pre_verification_gas = U256::from(1_001);
        assert_eq!(refused(&op), Ceiling::PreVerificationGas);
        // Paymaster limits count in the total whether or not the op names a paymaster.
        let mut op = at_limit.clone();
        op.paymaster_post_op_gas_limit = 1;
        assert_eq!(refused(&op), Ceiling::TotalGas);
        let mut op = at_limit.clone();
        op.max_fee_per_gas = 51;
        assert_eq!(refused(&op), Ceiling::Cost);
        // A bundler quoting a huge pre-verification gas that would overflow is refused, not
        // wrapped.
        let mut op = at_limit;
        op.pre_verification_gas = U256::MAX;
        assert_eq!(refused(&op), Ceiling::PreVerificationGas);
    }

    #[test]
    fn buffers_add_percentages() {
        let limits = GasLimits {
            pre_verification_gas: U256::from(50_000),
            verification_gas_limit: 100_000,
            call_gas_limit: 30_000,
            ..GasLimits::default()
        };
        let out = GasBuffers::default().apply(limits);
        assert_eq!(out.pre_verification_gas, U256::from(52_500));
        assert_eq!(out.verification_gas_limit, 120_000);
        assert_eq!(out.call_gas_limit, 33_000);
        let none = GasBuffers {
            verification_percent: 0,
            call_percent: 0,
            pre_verification_percent: 0,
        };
        assert_eq!(none.apply(limits), limits);
        let huge = GasLimits {
            verification_gas_limit: u128::MAX,
            ..limits
        };
        assert_eq!(
            GasBuffers::default().apply(huge).verification_gas_limit,
            u128::MAX
        );
    }
}
