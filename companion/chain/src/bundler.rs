//! A small JSON-RPC client for ERC-4337 bundlers (tested with Alto).
//!
//! Methods: `eth_sendUserOperation`, `eth_estimateUserOperationGas`, `eth_getUserOperationReceipt`,
//! `eth_getUserOperationByHash`, `eth_supportedEntryPoints`, `eth_chainId`, and Pimlico's
//! `pimlico_getUserOperationGasPrice` and `pimlico_getUserOperationStatus`. Errors keep the
//! bundler's JSON-RPC code, message and data ([`BundlerError::Rpc`]); [`BundlerError::aa_code`]
//! extracts the EntryPoint's `AAxx` code (e.g. `AA23`, `AA24`) from the message, and
//! [`BundlerError::rejection`] gives the parts an HTTP error body carries.
//!
//! # Submitting without ever changing the operation
//!
//! [`BundlerClient::submit`] retries `eth_sendUserOperation` with exponential backoff when the
//! request may not have reached the bundler or the bundler was briefly unavailable
//! ([`BundlerError::is_transient`]), re-sending the **identical** signed operation each time (so the
//! same userOpHash: a bundler that already holds it answers "already known" or a nonce error, never
//! a second operation). After an ambiguous failure it asks the bundler whether it already knows the
//! hash before reporting an error. It never builds, re-signs or modifies anything; a different
//! operation for the same intent can only come from the caller.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, Bytes, B256, U256};
use reqwest::IntoUrl;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::http::{excerpt, excerpt_bytes, read_capped, truncate, BodyError, HttpLimits};
use crate::userop::v0_7::{to_u128, GasLimits, GasOverflow, UserOperation};

/// Most characters of a JSON-RPC error message kept (room for a revert's hex data, which
/// bundlers often put in the message).
const MAX_ERROR_MESSAGE_CHARS: usize = 4096;
/// Largest JSON-RPC error `data` kept (as JSON text); larger data is dropped, the message kept.
const MAX_ERROR_DATA_CHARS: usize = 16 * 1024;

/// Everything that can go wrong talking to a bundler.
#[derive(Debug, thiserror::Error)]
pub enum BundlerError {
    /// The request did not reach the bundler or its answer could not be read. The URL is
    /// removed from the error (bundler URLs often carry API keys).
    #[error("bundler transport error: {0}")]
    Transport(reqwest::Error),
    /// The bundler answered with an HTTP error status and no JSON-RPC error object.
    #[error("bundler answered HTTP {status}: {body}")]
    Http {
        /// The HTTP status.
        status: u16,
        /// The response body (possibly truncated).
        body: String,
    },
    /// The bundler answered with a JSON-RPC error.
    #[error("bundler error {code}: {message}")]
    Rpc {
        /// The JSON-RPC error code (e.g. -32500 for a validation rejected by the EntryPoint).
        code: i64,
        /// The message, which names the EntryPoint's `AAxx` reason when there is one.
        message: String,
        /// The error's `data`, if any.
        data: Option<Value>,
    },
    /// The bundler's answer did not have the expected shape.
    #[error("unexpected bundler response to {method}: {reason}")]
    Decode {
        /// The JSON-RPC method.
        method: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A gas value did not fit the packed form.
    #[error(transparent)]
    GasOverflow(#[from] GasOverflow),
    /// The bundler accepted the operation under another userOpHash than the one computed locally
    /// (a different EntryPoint, chain or hashing rule: never sign on such a bundler's word).
    #[error("the bundler returned userOpHash {returned}, expected {expected}")]
    HashMismatch {
        /// The hash computed locally.
        expected: B256,
        /// The hash the bundler returned.
        returned: B256,
    },
    /// The bundler's answer was longer than the body cap ([`HttpLimits::max_body_bytes`]).
    #[error("the bundler's answer to {method} is over {limit} bytes")]
    TooLarge {
        /// The JSON-RPC method.
        method: &'static str,
        /// The cap.
        limit: usize,
    },
    /// The bundler's receipt is not the one of the operation asked about.
    #[error("the bundler's receipt for {user_op_hash} has {field} {got}, expected {expected}")]
    ReceiptMismatch {
        /// The userOpHash asked about.
        user_op_hash: B256,
        /// The field that differs.
        field: &'static str,
        /// What the operation has.
        expected: String,
        /// What the receipt says.
        got: String,
    },
    /// No receipt arrived in time.
    #[error("no receipt for user operation {hash} within {waited:?}")]
    ReceiptTimeout {
        /// The userOpHash.
        hash: B256,
        /// How long it waited.
        waited: Duration,
    },
}

impl From<reqwest::Error> for BundlerError {
    fn from(e: reqwest::Error) -> Self {
        BundlerError::Transport(e.without_url())
    }
}

impl BundlerError {
    /// The EntryPoint's `AAxx` code named in a JSON-RPC error message (`"AA23"`, `"AA24"`, …).
    pub fn aa_code(&self) -> Option<&str> {
        let BundlerError::Rpc { message, .. } = self else {
            return None;
        };
        let bytes = message.as_bytes();
        (0..bytes.len().saturating_sub(3)).find_map(|i| {
            let w = &bytes[i..i + 4];
            let boundary = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
            (boundary
                && w[0] == b'A'
                && w[1] == b'A'
                && w[2].is_ascii_digit()
                && w[3].is_ascii_digit())
            .then(|| &message[i..i + 4])
        })
    }

    /// The JSON-RPC error code, for [`BundlerError::Rpc`].
    pub fn rpc_code(&self) -> Option<i64> {
        match self {
            BundlerError::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether retrying the same request may succeed: the request did not get through or got no
    /// readable answer (connection refused or reset, timeout), or the bundler (or a proxy in
    /// front of it) answered 429, 502, 503 or 504 without a JSON-RPC error. A JSON-RPC error is
    /// the bundler's verdict on the operation and never transient.
    pub fn is_transient(&self) -> bool {
        match self {
            BundlerError::Transport(e) => !e.is_builder(),
            BundlerError::Http { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            _ => false,
        }
    }

    /// Whether the bundler does not implement the method (JSON-RPC -32601).
    pub fn is_method_not_found(&self) -> bool {
        self.rpc_code() == Some(-32601)
    }

    /// Whether the bundler says it already holds this operation (after a re-send).
    pub fn is_already_known(&self) -> bool {
        matches!(self, BundlerError::Rpc { message, .. } if message.to_ascii_lowercase().contains("already known"))
    }

    /// What this error, as the answer to `eth_sendUserOperation` of a signed operation, says
    /// about the operation (see [`SendVerdict`]). Only [`SendVerdict::Rejected`],
    /// [`SendVerdict::OutOfTime`] and [`SendVerdict::SessionRevoked`] are verdicts on the
    /// operation itself, and even they are final only once the operation is known to be neither
    /// held by the bundler nor on chain.
    pub fn send_verdict(&self) -> SendVerdict {
        if self.is_already_known() {
            return SendVerdict::AlreadyKnown;
        }
        if self.is_transient() {
            return SendVerdict::Unreachable;
        }
        let Some(rejection) = self.rejection() else {
            return SendVerdict::Unusable;
        };
        let refusal = rejection.revert.as_ref().and_then(|r| r.refusal_code());
        match (rejection.aa_code.as_deref(), rejection.rpc_code, refusal) {
            (Some("AA25"), _, _) => SendVerdict::Nonce,
            (_, _, Some(crate::session::RefusalCode::SessionRevoked)) => {
                SendVerdict::SessionRevoked
            }
            (Some("AA22"), _, _)
            | (_, -32503, _)
            | (_, _, Some(crate::session::RefusalCode::SessionExpired)) => SendVerdict::OutOfTime,
            _ => SendVerdict::Rejected,
        }
    }

    /// The parts of a bundler's refusal that an HTTP error body carries, or `None` when the
    /// bundler gave no verdict (transport or decoding problems).
    pub fn rejection(&self) -> Option<BundlerRejection> {
        let BundlerError::Rpc {
            code,
            message,
            data,
        } = self
        else {
            return None;
        };
        Some(BundlerRejection {
            rpc_code: *code,
            aa_code: self.aa_code().map(str::to_owned),
            message: message.clone(),
            revert: crate::revert::decode_from_rpc_error(message, data.as_ref()),
        })
    }
}

/// What a failed `eth_sendUserOperation` says about the operation sent
/// ([`BundlerError::send_verdict`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendVerdict {
    /// "Already known": the bundler holds this very operation.
    AlreadyKnown,
    /// The request may not have reached the bundler, or the bundler was briefly unavailable
    /// ([`BundlerError::is_transient`]): nothing is known.
    Unreachable,
    /// An answer that says nothing about the operation (another userOpHash, an unreadable or
    /// oversized answer, an HTTP error without a JSON-RPC error): nothing is known.
    Unusable,
    /// AA25, invalid account nonce: the chain's nonce may have passed the operation's (it may be
    /// the operation itself, included at the last moment), or another operation with its nonce
    /// is ahead of it. Look the nonce and the operation up before judging.
    Nonce,
    /// Out of its validity (AA22 "expired or not due", ERC-7769 -32503, the validator's
    /// `PeriodOutsideWindow`).
    OutOfTime,
    /// The validator refused it because the session is revoked.
    SessionRevoked,
    /// Any other refusal in validation (signature, policy, funds, gas, ...).
    Rejected,
}

/// A bundler's refusal of an operation, ready to be put in an HTTP error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundlerRejection {
    /// The JSON-RPC error code (ERC-7769: -32500 validation reverted, -32501 paymaster,
    /// -32502 opcode/storage rule, -32503 out of time range, -32507 signature, …).
    pub rpc_code: i64,
    /// The EntryPoint's `AAxx` code when the message names one (`AA23`, `AA24`, `AA25`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aa_code: Option<String>,
    /// The bundler's message.
    pub message: String,
    /// The account's or validator's revert, decoded when it could be found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revert: Option<crate::revert::DecodedRevert>,
}

/// Gas limits estimated by `eth_estimateUserOperationGas` (hex quantities).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GasEstimate {
    /// Gas for the bundler's overhead.
    pub pre_verification_gas: U256,
    /// Gas for validation.
    pub verification_gas_limit: U256,
    /// Gas for execution.
    pub call_gas_limit: U256,
    /// Gas for the paymaster's validation, when there is a paymaster.
    #[serde(default)]
    pub paymaster_verification_gas_limit: Option<U256>,
    /// Gas for the paymaster's postOp, when there is a paymaster.
    #[serde(default)]
    pub paymaster_post_op_gas_limit: Option<U256>,
}

impl TryFrom<&GasEstimate> for GasLimits {
    type Error = GasOverflow;

    fn try_from(e: &GasEstimate) -> Result<Self, Self::Error> {
        Ok(GasLimits {
            pre_verification_gas: e.pre_verification_gas,
            verification_gas_limit: to_u128("verificationGasLimit", e.verification_gas_limit)?,
            call_gas_limit: to_u128("callGasLimit", e.call_gas_limit)?,
            paymaster_verification_gas_limit: to_u128(
                "paymasterVerificationGasLimit",
                e.paymaster_verification_gas_limit.unwrap_or_default(),
            )?,
            paymaster_post_op_gas_limit: to_u128(
                "paymasterPostOpGasLimit",
                e.paymaster_post_op_gas_limit.unwrap_or_default(),
            )?,
        })
    }
}

/// One fee level of `pimlico_getUserOperationGasPrice`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GasPrice {
    /// Maximum fee per gas.
    pub max_fee_per_gas: U256,
    /// Maximum priority fee per gas.
    pub max_priority_fee_per_gas: U256,
}

impl GasPrice {
    /// The fees as `(max_fee_per_gas, max_priority_fee_per_gas)` for
    /// [`UserOperation::with_fees`].
    pub fn as_u128s(&self) -> Result<(u128, u128), GasOverflow> {
        Ok((
            to_u128("maxFeePerGas", self.max_fee_per_gas)?,
            to_u128("maxPriorityFeePerGas", self.max_priority_fee_per_gas)?,
        ))
    }
}

/// The answer of `pimlico_getUserOperationGasPrice`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GasPrices {
    /// Cheapest.
    pub slow: GasPrice,
    /// Usual.
    pub standard: GasPrice,
    /// Quickest.
    pub fast: GasPrice,
}

/// The transaction that included a user operation (part of [`UserOperationReceipt`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionReceipt {
    /// Hash of the bundle transaction.
    pub transaction_hash: B256,
    /// Block number.
    pub block_number: U256,
    /// Block hash.
    #[serde(default)]
    pub block_hash: Option<B256>,
    /// Transaction status (1 = success), when given.
    #[serde(default)]
    pub status: Option<U256>,
    /// Every other field, as received.
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

/// The answer of `eth_getUserOperationByHash` (the operation, and where it was included if it
/// was).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserOperationByHash {
    /// The operation as the bundler has it.
    pub user_operation: Value,
    /// The EntryPoint.
    pub entry_point: Address,
    /// The bundle transaction, once included.
    #[serde(default)]
    pub transaction_hash: Option<B256>,
    /// Its block hash, once included.
    #[serde(default)]
    pub block_hash: Option<B256>,
    /// Its block number, once included.
    #[serde(default)]
    pub block_number: Option<U256>,
}

/// The answer of `pimlico_getUserOperationStatus`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserOperationStatus {
    /// `not_found`, `not_submitted`, `submitted`, `rejected`, `included`, `failed`, `queued`, …
    pub status: String,
    /// The bundle transaction, when there is one.
    #[serde(default)]
    pub transaction_hash: Option<B256>,
}

impl UserOperationStatus {
    /// Whether the bundler knows the operation (any status but `not_found`).
    pub fn is_known(&self) -> bool {
        self.status != "not_found"
    }
}

/// Whether a bundler holds an operation ([`BundlerClient::holding`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holding {
    /// Whether it holds it (mempool, queue, bundle being sent, or included).
    pub held: bool,
    /// The bundler's word for it (`pimlico_getUserOperationStatus`'s status, or `in_mempool`,
    /// `included`, `not_found` from `eth_getUserOperationByHash`).
    pub status: String,
}

/// How [`BundlerClient::submit`] retries transient failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (at least one).
    pub attempts: u32,
    /// Pause before the second attempt; doubled after each further one.
    pub initial_backoff: Duration,
    /// Longest pause.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, 200 ms doubling up to 3 s (about 6 s in all).
    fn default() -> Self {
        Self {
            attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(3),
        }
    }
}

impl RetryPolicy {
    /// A single attempt.
    pub const NONE: RetryPolicy = RetryPolicy {
        attempts: 1,
        initial_backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
    };

    /// The pause after failed attempt `n` (1-based).
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// The outcome of [`BundlerClient::submit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submission {
    /// The userOpHash (equal to the one computed locally).
    pub user_op_hash: B256,
    /// Requests sent (1 unless transient failures were retried).
    pub attempts: u32,
    /// Whether the bundler turned out to hold the operation already after an ambiguous failure
    /// (answered "already known", or found by hash) rather than accepting this very request.
    pub already_known: bool,
}

/// The answer of `eth_getUserOperationReceipt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserOperationReceipt {
    /// The userOpHash.
    pub user_op_hash: B256,
    /// The EntryPoint.
    pub entry_point: Address,
    /// The account.
    pub sender: Address,
    /// The operation's nonce.
    pub nonce: U256,
    /// The paymaster (zero address without one), when given.
    #[serde(default)]
    pub paymaster: Option<Address>,
    /// What the operation paid, in wei.
    pub actual_gas_cost: U256,
    /// Gas the operation used.
    pub actual_gas_used: U256,
    /// Whether the execution phase succeeded.
    pub success: bool,
    /// Revert data of a failed execution, when given.
    #[serde(default)]
    pub reason: Option<Bytes>,
    /// The operation's logs.
    #[serde(default)]
    pub logs: Vec<Value>,
    /// The bundle transaction's receipt.
    pub receipt: TransactionReceipt,
}

/// Parameters of a method without any: `[]` (bundlers refuse `null`).
const NO_PARAMS: [u8; 0] = [];

#[derive(Serialize)]
struct Request<'a, P> {
    jsonrpc: &'static str,
    id: u64,
    method: &'a str,
    params: P,
}

#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    result: Value,
    #[serde(default)]
    error: Option<ErrorObject>,
}

#[derive(Deserialize)]
struct ErrorObject {
    code: i64,
    message: String,
    #[serde(default)]
    data: Option<Value>,
}

/// A bundler JSON-RPC client.
#[derive(Debug)]
pub struct BundlerClient {
    http: reqwest::Client,
    url: reqwest::Url,
    next_id: AtomicU64,
    max_body_bytes: usize,
}

impl BundlerClient {
    /// A client for the bundler at `url` with the default [`HttpLimits`].
    pub fn new(url: impl IntoUrl) -> Result<Self, BundlerError> {
        Self::with_limits(url, HttpLimits::default())
    }

    /// A client for the bundler at `url` bounded by `limits` (timeouts, body cap).
    pub fn with_limits(url: impl IntoUrl, limits: HttpLimits) -> Result<Self, BundlerError> {
        Ok(Self {
            http: limits.client()?,
            url: url.into_url()?,
            next_id: AtomicU64::new(1),
            max_body_bytes: limits.max_body_bytes,
        })
    }

    /// The bundler's URL.
    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    /// Sends one JSON-RPC request and decodes its result.
    pub async fn request<P: Serialize, R: DeserializeOwned>(
        &self,
        method: &'static str,
        params: P,
    ) -> Result<R, BundlerError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let response = self
            .http
            .post(self.url.clone())
            .json(&Request {
                jsonrpc: "2.0",
                id,
                method,
                params,
            })
            .send()
            .await?;
        let status = response.status();
        let body = read_capped(response, self.max_body_bytes)
            .await
            .map_err(|e| match e {
                BodyError::Transport(e) => BundlerError::from(e),
                BodyError::TooLarge { limit } => BundlerError::TooLarge { method, limit },
            })?;
        match serde_json::from_slice::<Response>(&body) {
            Ok(Response { error: Some(e), .. }) => Err(BundlerError::Rpc {
                code: e.code,
                message: truncate(&e.message, MAX_ERROR_MESSAGE_CHARS),
                data: e
                    .data
                    .filter(|d| d.to_string().len() <= MAX_ERROR_DATA_CHARS),
            }),
            _ if !status.is_success() => Err(BundlerError::Http {
                status: status.as_u16(),
                body: excerpt_bytes(&body),
            }),
            Ok(Response {
                result,
                error: None,
            }) => serde_json::from_value(result).map_err(|e| BundlerError::Decode {
                method,
                reason: excerpt(&e.to_string()),
            }),
            Err(e) => Err(BundlerError::Decode {
                method,
                reason: format!("{e}: {}", excerpt_bytes(&body)),
            }),
        }
    }

    /// `eth_sendUserOperation`: submits a signed operation; returns its userOpHash.
    pub async fn send_user_operation(
        &self,
        op: &UserOperation,
        entry_point: Address,
    ) -> Result<B256, BundlerError> {
        self.request("eth_sendUserOperation", (op.to_rpc(), entry_point))
            .await
    }

    /// Submits a signed operation whose userOpHash (computed locally) is `expected_hash`,
    /// retrying transient failures with backoff as `policy` says, always with the identical
    /// operation (see the module docs). When a request may have reached the bundler and a later
    /// attempt is refused, the bundler is asked whether it already holds `expected_hash`
    /// (receipt, `eth_getUserOperationByHash`, `pimlico_getUserOperationStatus`): if so, that is a
    /// success with [`Submission::already_known`].
    pub async fn submit(
        &self,
        op: &UserOperation,
        entry_point: Address,
        expected_hash: B256,
        policy: RetryPolicy,
    ) -> Result<Submission, BundlerError> {
        let attempts = policy.attempts.max(1);
        let mut ambiguous = false;
        let mut n = 0;
        loop {
            n += 1;
            let err = match self.send_user_operation(op, entry_point).await {
                Ok(returned) if returned == expected_hash => {
                    return Ok(Submission {
                        user_op_hash: returned,
                        attempts: n,
                        already_known: false,
                    })
                }
                Ok(returned) => {
                    return Err(BundlerError::HashMismatch {
                        expected: expected_hash,
                        returned,
                    })
                }
                Err(e) => e,
            };
            if ambiguous && (err.is_already_known() || !err.is_transient()) {
                // An earlier request may have been accepted: this refusal may be about our own
                // operation already being in the mempool (or on chain).
                if err.is_already_known() || self.knows(expected_hash).await {
                    return Ok(Submission {
                        user_op_hash: expected_hash,
                        attempts: n,
                        already_known: true,
                    });
                }
            }
            if !err.is_transient() || n >= attempts {
                return Err(err);
            }
            ambiguous = true;
            tokio::time::sleep(policy.backoff(n)).await;
        }
    }

    /// Whether the bundler holds or has included the operation `hash` (best effort: methods a
    /// bundler does not offer and errors count as "no").
    pub async fn knows(&self, hash: B256) -> bool {
        if let Ok(Some(_)) = self.get_user_operation_receipt(hash).await {
            return true;
        }
        if let Ok(Some(_)) = self.get_user_operation_by_hash(hash).await {
            return true;
        }
        matches!(self.user_operation_status(hash).await, Ok(s) if s.is_known())
    }

    /// Whether the bundler holds the operation `hash` now (in its mempool, queued, or in a bundle
    /// being sent): `pimlico_getUserOperationStatus` where the bundler offers it (`not_submitted`,
    /// `queued`, `submitted` and `included` hold it; `not_found`, `rejected` and `failed` do
    /// not), else `eth_getUserOperationByHash` (ERC-4337: it answers for operations in the
    /// mempool too). Errors are returned: "not held" is never guessed from a failed request.
    pub async fn holding(&self, hash: B256) -> Result<Holding, BundlerError> {
        match self.user_operation_status(hash).await {
            Ok(s) => {
                let held = matches!(
                    s.status.as_str(),
                    "not_submitted" | "queued" | "submitted" | "included"
                );
                Ok(Holding {
                    held,
                    status: s.status,
                })
            }
            Err(e) if e.is_method_not_found() => {
                let found = self.get_user_operation_by_hash(hash).await?;
                Ok(Holding {
                    held: found.is_some(),
                    status: match found {
                        Some(f) if f.transaction_hash.is_some() => "included",
                        Some(_) => "in_mempool",
                        None => "not_found",
                    }
                    .to_owned(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// `eth_getUserOperationByHash`: the operation, or `None` when the bundler does not know it
    /// (some bundlers, Alto among them, only find included operations).
    pub async fn get_user_operation_by_hash(
        &self,
        user_op_hash: B256,
    ) -> Result<Option<UserOperationByHash>, BundlerError> {
        self.request("eth_getUserOperationByHash", [user_op_hash])
            .await
    }

    /// `pimlico_getUserOperationStatus` (Alto and Pimlico bundlers).
    pub async fn user_operation_status(
        &self,
        user_op_hash: B256,
    ) -> Result<UserOperationStatus, BundlerError> {
        self.request("pimlico_getUserOperationStatus", [user_op_hash])
            .await
    }

    /// `eth_chainId` of the bundler.
    pub async fn chain_id(&self) -> Result<u64, BundlerError> {
        let id: U256 = self.request("eth_chainId", NO_PARAMS).await?;
        u64::try_from(id).map_err(|_| BundlerError::Decode {
            method: "eth_chainId",
            reason: format!("chain id {id} does not fit 64 bits"),
        })
    }

    /// `eth_estimateUserOperationGas`: estimates the gas limits of `op`, whose signature must have
    /// the final length and layout (see [`crate::signature`]).
    pub async fn estimate_user_operation_gas(
        &self,
        op: &UserOperation,
        entry_point: Address,
    ) -> Result<GasEstimate, BundlerError> {
        self.request("eth_estimateUserOperationGas", (op.to_rpc(), entry_point))
            .await
    }

    /// `eth_getUserOperationReceipt`: the receipt, or `None` while the operation is not included.
    pub async fn get_user_operation_receipt(
        &self,
        user_op_hash: B256,
    ) -> Result<Option<UserOperationReceipt>, BundlerError> {
        self.request("eth_getUserOperationReceipt", [user_op_hash])
            .await
    }

    /// `eth_supportedEntryPoints`.
    pub async fn supported_entry_points(&self) -> Result<Vec<Address>, BundlerError> {
        self.request("eth_supportedEntryPoints", NO_PARAMS).await
    }

    /// `pimlico_getUserOperationGasPrice` (Alto and Pimlico bundlers).
    pub async fn user_operation_gas_price(&self) -> Result<GasPrices, BundlerError> {
        self.request("pimlico_getUserOperationGasPrice", NO_PARAMS)
            .await
    }

    /// `eth_getUserOperationReceipt`, with the receipt checked against `expected` (see
    /// [`UserOperationReceipt::check`]): a receipt for another operation is an error, never a
    /// settlement.
    pub async fn checked_receipt(
        &self,
        expected: &ExpectedReceipt,
    ) -> Result<Option<UserOperationReceipt>, BundlerError> {
        let receipt = self
            .get_user_operation_receipt(expected.user_op_hash)
            .await?;
        if let Some(r) = &receipt {
            r.check(expected)?;
        }
        Ok(receipt)
    }

    /// Polls [`BundlerClient::checked_receipt`] every `poll` until the receipt arrives or
    /// `timeout` passes.
    pub async fn wait_for_receipt(
        &self,
        expected: &ExpectedReceipt,
        timeout: Duration,
        poll: Duration,
    ) -> Result<UserOperationReceipt, BundlerError> {
        let start = Instant::now();
        loop {
            if let Some(receipt) = self.checked_receipt(expected).await? {
                return Ok(receipt);
            }
            if start.elapsed() >= timeout {
                return Err(BundlerError::ReceiptTimeout {
                    hash: expected.user_op_hash,
                    waited: start.elapsed(),
                });
            }
            tokio::time::sleep(poll).await;
        }
    }
}

/// What the receipt of one operation must say: its hash, EntryPoint, sender and nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedReceipt {
    /// The userOpHash (computed locally).
    pub user_op_hash: B256,
    /// The EntryPoint the operation was sent to.
    pub entry_point: Address,
    /// The account.
    pub sender: Address,
    /// The operation's full nonce (key and sequence).
    pub nonce: U256,
}

impl ExpectedReceipt {
    /// The expectation for `op`, whose userOpHash for `entry_point` is `user_op_hash`.
    pub fn of(op: &UserOperation, user_op_hash: B256, entry_point: Address) -> Self {
        Self {
            user_op_hash,
            entry_point,
            sender: op.sender,
            nonce: op.nonce,
        }
    }
}

impl UserOperationReceipt {
    /// Checks that the receipt is the one of `expected`'s operation (hash, EntryPoint, sender,
    /// nonce); a bundler answering with another operation's receipt is refused.
    pub fn check(&self, expected: &ExpectedReceipt) -> Result<(), BundlerError> {
        let mismatch = |field: &'static str, expected: String, got: String| {
            Err(BundlerError::ReceiptMismatch {
                user_op_hash: self.user_op_hash,
                field,
                expected,
                got,
            })
        };
        if self.user_op_hash != expected.user_op_hash {
            return mismatch(
                "userOpHash",
                expected.user_op_hash.to_string(),
                self.user_op_hash.to_string(),
            );
        }
        if self.entry_point != expected.entry_point {
            return mismatch(
                "entryPoint",
                expected.entry_point.to_string(),
                self.entry_point.to_string(),
            );
        }
        if self.sender != expected.sender {
            return mismatch(
                "sender",
                expected.sender.to_string(),
                self.sender.to_string(),
            );
        }
        if self.nonce != expected.nonce {
            return mismatch("nonce", expected.nonce.to_string(), self.nonce.to_string());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::address;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Serves one canned HTTP response per connection, in order, and returns the request bodies.
    async fn serve(responses: Vec<(u16, String)>) -> (String, tokio::task::JoinHandle<Vec<Value>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handle = tokio::spawn(async move {
            let mut bodies = Vec::new();
            for (status, body) in responses {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let request_body = loop {
                    let n = sock.read(&mut chunk).await.unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(split) = text.find("\r\n\r\n") {
                        let len: usize = text[..split]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if buf.len() >= split + 4 + len {
                            break text[split + 4..split + 4 + len].to_string();
                        }
                    }
                };
                bodies.push(serde_json::from_str(&request_body).unwrap());
                if status == 0 {
                    // Drop the connection without answering: a transport error for the client.
                    drop(sock);
                    continue;
                }
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                sock.write_all(reply.as_bytes()).await.unwrap();
            }
            bodies
        });
        (url, handle)
    }

    fn op() -> UserOperation {
        UserOperation::new(
            address!("0x1111111111111111111111111111111111111111"),
            U256::ZERO,
            Bytes::new(),
        )
    }

    #[tokio::test]
    async fn send_returns_hash_and_sends_rpc_form() {
        let hash = "0x6226d388b9eeafd16264b979d58847aaa287dd4c0724259f414ea468434dbf82";
        let (url, server) = serve(vec![(
            200,
            format!(r#"{{"jsonrpc":"2.0","id":1,"result":"{hash}"}}"#),
        )])
        .await;
        let client = BundlerClient::new(url).unwrap();
        let got = client
            .send_user_operation(&op(), kms_contracts::ENTRY_POINT_V07)
            .await
            .unwrap();
        assert_eq!(got, hash.parse::<B256>().unwrap());
        let bodies = server.await.unwrap();
        assert_eq!(bodies[0]["method"], "eth_sendUserOperation");
        assert_eq!(
            bodies[0]["params"][0]["sender"],
            "0x1111111111111111111111111111111111111111"
        );
        assert_eq!(
            bodies[0]["params"][1],
            "0x0000000071727de22e5e9d8baf0edac6f37da032"
        );
    }

    #[tokio::test]
    async fn rpc_errors_keep_code_message_and_aa_code() {
        let body = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32500,"message":"UserOperation reverted during simulation with reason: AA23 reverted 0x1234","data":{"x":1}}}"#;
        // Some bundlers answer errors with HTTP 200, others with 4xx: both keep the JSON-RPC error.
        let (url, _server) = serve(vec![(200, body.to_string()), (400, body.to_string())]).await;
        let client = BundlerClient::new(url).unwrap();
        for _ in 0..2 {
            let err = client
                .estimate_user_operation_gas(&op(), kms_contracts::ENTRY_POINT_V07)
                .await
                .unwrap_err();
            assert_eq!(err.rpc_code(), Some(-32500));
            assert_eq!(err.aa_code(), Some("AA23"));
            let BundlerError::Rpc { message, data, .. } = &err else {
                panic!("{err:?}")
            };
            assert!(message.contains("reverted during simulation"));
            assert_eq!(data.as_ref().unwrap()["x"], 1);
        }
    }

    const HASH: &str = "0x6226d388b9eeafd16264b979d58847aaa287dd4c0724259f414ea468434dbf82";

    fn fast() -> RetryPolicy {
        RetryPolicy {
            attempts: 4,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
        }
    }

    fn ok_hash() -> (u16, String) {
        (
            200,
            format!(r#"{{"jsonrpc":"2.0","id":1,"result":"{HASH}"}}"#),
        )
    }

    fn rpc_error(code: i64, message: &str) -> (u16, String) {
        (
            200,
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"error":{{"code":{code},"message":"{message}"}}}}"#
            ),
        )
    }

    /// The operation's JSON in a recorded request (the id differs between attempts).
    fn sent_op(body: &Value) -> (Value, Value) {
        (body["method"].clone(), body["params"].clone())
    }

    #[tokio::test]
    async fn submit_retries_transport_errors_with_the_identical_operation() {
        let (url, server) = serve(vec![(0, String::new()), (503, "busy".into()), ok_hash()]).await;
        let client = BundlerClient::new(url).unwrap();
        let sub = client
            .submit(
                &op(),
                kms_contracts::ENTRY_POINT_V07,
                HASH.parse().unwrap(),
                fast(),
            )
            .await
            .unwrap();
        assert_eq!(sub.attempts, 3);
        assert!(!sub.already_known);
        let bodies = server.await.unwrap();
        assert_eq!(bodies.len(), 3);
        assert!(
            bodies.iter().all(|b| sent_op(b) == sent_op(&bodies[0])),
            "{bodies:?}"
        );
        assert_eq!(bodies[0]["method"], "eth_sendUserOperation");
    }

    #[tokio::test]
    async fn submit_never_retries_a_verdict() {
        let (url, server) = serve(vec![rpc_error(-32500, "AA23 reverted")]).await;
        let client = BundlerClient::new(url).unwrap();
        let err = client
            .submit(
                &op(),
                kms_contracts::ENTRY_POINT_V07,
                HASH.parse().unwrap(),
                fast(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.aa_code(), Some("AA23"));
        assert_eq!(server.await.unwrap().len(), 1, "a single request");
    }

    #[tokio::test]
    async fn submit_after_an_ambiguous_failure_accepts_already_known() {
        let (url, server) =
            serve(vec![(0, String::new()), rpc_error(-32602, "Already known")]).await;
        let client = BundlerClient::new(url).unwrap();
        let sub = client
            .submit(
                &op(),
                kms_contracts::ENTRY_POINT_V07,
                HASH.parse().unwrap(),
                fast(),
            )
            .await
            .unwrap();
        assert!(sub.already_known);
        assert_eq!(sub.attempts, 2);
        assert_eq!(server.await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn submit_after_an_ambiguous_failure_asks_by_hash() {
        // Timeout-like loss, then a nonce error (the first request was accepted and mined), then
        // the receipt lookup finds it.
        let receipt = format!(
            r#"{{"jsonrpc":"2.0","id":3,"result":{{"userOpHash":"{HASH}","entryPoint":"0x0000000071727De22E5E9d8BAf0edAc6f37da032","sender":"0x1111111111111111111111111111111111111111","nonce":"0x0","actualGasCost":"0x1","actualGasUsed":"0x1","success":true,"receipt":{{"transactionHash":"{HASH}","blockNumber":"0x1"}}}}}}"#
        );
        let (url, server) = serve(vec![
            (0, String::new()),
            rpc_error(-32500, "AA25 invalid account nonce"),
            (200, receipt),
        ])
        .await;
        let client = BundlerClient::new(url).unwrap();
        let sub = client
            .submit(
                &op(),
                kms_contracts::ENTRY_POINT_V07,
                HASH.parse().unwrap(),
                fast(),
            )
            .await
            .unwrap();
        assert!(sub.already_known);
        let bodies = server.await.unwrap();
        assert_eq!(bodies[2]["method"], "eth_getUserOperationReceipt");
        assert_eq!(bodies[2]["params"][0], HASH);
    }

    #[tokio::test]
    async fn submit_after_an_ambiguous_failure_reports_a_real_refusal() {
        // The bundler never saw the first request: the refusal stands.
        let null = (200, r#"{"jsonrpc":"2.0","id":1,"result":null}"#.to_string());
        let (url, server) = serve(vec![
            (0, String::new()),
            rpc_error(-32500, "AA25 invalid account nonce"),
            null.clone(),
            null,
            rpc_error(-32601, "Method not found"),
        ])
        .await;
        let client = BundlerClient::new(url).unwrap();
        let err = client
            .submit(
                &op(),
                kms_contracts::ENTRY_POINT_V07,
                HASH.parse().unwrap(),
                fast(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.aa_code(), Some("AA25"));
        let methods: Vec<_> = server
            .await
            .unwrap()
            .iter()
            .map(|b| b["method"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            methods,
            [
                "eth_sendUserOperation",
                "eth_sendUserOperation",
                "eth_getUserOperationReceipt",
                "eth_getUserOperationByHash",
                "pimlico_getUserOperationStatus"
            ]
        );
    }

    #[tokio::test]
    async fn submit_gives_up_after_the_attempts_and_checks_the_hash() {
        let (url, server) = serve(vec![(502, "x".into()), (502, "x".into())]).await;
        let client = BundlerClient::new(url).unwrap();
        let err = client
            .submit(
                &op(),
                kms_contracts::ENTRY_POINT_V07,
                HASH.parse().unwrap(),
                RetryPolicy {
                    attempts: 2,
                    ..fast()
                },
            )
            .await
            .unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        assert_eq!(server.await.unwrap().len(), 2);

        let (url, _server) = serve(vec![ok_hash()]).await;
        let err = BundlerClient::new(url)
            .unwrap()
            .submit(&op(), kms_contracts::ENTRY_POINT_V07, B256::ZERO, fast())
            .await
            .unwrap_err();
        assert!(matches!(err, BundlerError::HashMismatch { .. }), "{err:?}");
    }

    #[test]
    fn send_verdicts_tell_a_refusal_from_no_answer() {
        let rpc = |code: i64, message: &str| BundlerError::Rpc {
            code,
            message: message.into(),
            data: None,
        };
        assert_eq!(
            rpc(-32602, "Already known").send_verdict(),
            SendVerdict::AlreadyKnown
        );
        assert_eq!(
            rpc(
                -32500,
                "UserOperation failed validation with reason: AA25 invalid account nonce"
            )
            .send_verdict(),
            SendVerdict::Nonce
        );
        assert_eq!(
            rpc(-32500, "AA22 expired or not due").send_verdict(),
            SendVerdict::OutOfTime
        );
        assert_eq!(
            rpc(-32503, "out of time range").send_verdict(),
            SendVerdict::OutOfTime
        );
        assert_eq!(
            rpc(-32507, "AA24 signature error").send_verdict(),
            SendVerdict::Rejected
        );
        let revoked = alloy::sol_types::SolError::abi_encode(
            &kms_contracts::SessionKeyValidator::SessionIsRevoked {
                account: Address::repeat_byte(1),
                key: Address::repeat_byte(2),
            },
        );
        assert_eq!(
            rpc(
                -32500,
                &format!(
                    "UserOperation reverted with reason: AA23 reverted 0x{}",
                    alloy::primitives::hex::encode(&revoked)
                )
            )
            .send_verdict(),
            SendVerdict::SessionRevoked
        );
        for unusable in [
            BundlerError::HashMismatch {
                expected: B256::ZERO,
                returned: B256::repeat_byte(1),
            },
            BundlerError::Decode {
                method: "eth_sendUserOperation",
                reason: "x".into(),
            },
            BundlerError::Http {
                status: 500,
                body: String::new(),
            },
        ] {
            assert_eq!(unusable.send_verdict(), SendVerdict::Unusable, "{unusable}");
        }
        assert_eq!(
            BundlerError::Http {
                status: 503,
                body: String::new()
            }
            .send_verdict(),
            SendVerdict::Unreachable
        );
    }

    #[tokio::test]
    async fn holding_reads_the_status_or_falls_back_to_by_hash() {
        let status = |s: &str| {
            (
                200,
                format!(
                    r#"{{"jsonrpc":"2.0","id":1,"result":{{"status":"{s}","transactionHash":null}}}}"#
                ),
            )
        };
        let by_hash = r#"{"jsonrpc":"2.0","id":1,"result":{"userOperation":{},"entryPoint":"0x0000000071727De22E5E9d8BAf0edAc6f37da032","transactionHash":null,"blockHash":null,"blockNumber":null}}"#
            .to_string();
        let (url, server) = serve(vec![
            status("not_submitted"),
            status("rejected"),
            status("not_found"),
            rpc_error(-32601, "Method not found"),
            (200, by_hash),
            rpc_error(-32601, "Method not found"),
            (200, r#"{"jsonrpc":"2.0","id":1,"result":null}"#.to_string()),
            (503, "busy".into()),
        ])
        .await;
        let client = BundlerClient::new(url).unwrap();
        let hash: B256 = HASH.parse().unwrap();
        let held = |h: Holding| (h.held, h.status);
        assert_eq!(
            held(client.holding(hash).await.unwrap()),
            (true, "not_submitted".into())
        );
        assert_eq!(
            held(client.holding(hash).await.unwrap()),
            (false, "rejected".into())
        );
        assert_eq!(
            held(client.holding(hash).await.unwrap()),
            (false, "not_found".into())
        );
        assert_eq!(
            held(client.holding(hash).await.unwrap()),
            (true, "in_mempool".into())
        );
        assert_eq!(
            held(client.holding(hash).await.unwrap()),
            (false, "not_found".into())
        );
        // No answer is never "not held".
        assert!(client.holding(hash).await.is_err());
        let methods: Vec<_> = server
            .await
            .unwrap()
            .iter()
            .map(|b| b["method"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(methods[4], "eth_getUserOperationByHash");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
        };
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(2), Duration::from_millis(200));
        assert_eq!(p.backoff(3), Duration::from_millis(350));
        assert_eq!(p.backoff(40), Duration::from_millis(350));
    }

    #[test]
    fn transport_errors_carry_no_url() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Port 9 (discard) on localhost: refused.
        let client = BundlerClient::new("http://127.0.0.1:9/rpc?apikey=SECRET").unwrap();
        let err = rt.block_on(client.supported_entry_points()).unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        assert!(!err.to_string().contains("SECRET"), "{err}");
        assert!(!format!("{err:?}").contains("SECRET"), "{err:?}");
    }

    #[test]
    fn rejection_body() {
        let inner = kms_contracts::SessionKeyValidator::TargetNotAllowed {
            target: address!("0x1111111111111111111111111111111111111111"),
        };
        let data = alloy::sol_types::SolError::abi_encode(&inner);
        let err = BundlerError::Rpc {
            code: -32500,
            message: format!(
                "UserOperation reverted with reason: AA23 reverted 0x{}",
                alloy::primitives::hex::encode(&data)
            ),
            data: None,
        };
        let r = err.rejection().unwrap();
        assert_eq!(r.rpc_code, -32500);
        assert_eq!(r.aa_code.as_deref(), Some("AA23"));
        assert_eq!(r.revert.as_ref().unwrap().name, "TargetNotAllowed");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["aaCode"], "AA23");
        assert_eq!(json["revert"]["name"], "TargetNotAllowed");
        assert!(BundlerError::Http {
            status: 500,
            body: String::new()
        }
        .rejection()
        .is_none());
    }

    #[test]
    fn builds_a_tls_client() {
        // https needs reqwest's rustls crypto provider; building the client must not panic.
        let client = BundlerClient::new("https://bundler.invalid/rpc").unwrap();
        assert_eq!(client.url().scheme(), "https");
    }

    #[test]
    fn aa_code_extraction() {
        let e = |m: &str| BundlerError::Rpc {
            code: -32507,
            message: m.into(),
            data: None,
        };
        assert_eq!(e("AA24 signature error").aa_code(), Some("AA24"));
        assert_eq!(
            e("reason: AA10 sender already constructed").aa_code(),
            Some("AA10")
        );
        assert_eq!(e("no code here; BAA23 is not one").aa_code(), None);
        assert_eq!(e("AA2").aa_code(), None);
    }

    #[tokio::test]
    async fn http_error_without_json_rpc_error() {
        let (url, server) = serve(vec![(502, "bad gateway".to_string())]).await;
        let err = BundlerClient::new(url)
            .unwrap()
            .supported_entry_points()
            .await
            .unwrap_err();
        assert!(
            matches!(err, BundlerError::Http { status: 502, .. }),
            "{err:?}"
        );
        assert_eq!(
            server.await.unwrap()[0]["params"],
            serde_json::json!([]),
            "no params is [], not null"
        );
    }

    #[tokio::test]
    async fn receipt_none_then_some_and_gas_types() {
        let receipt = r#"{"jsonrpc":"2.0","id":3,"result":{
            "userOpHash":"0x6226d388b9eeafd16264b979d58847aaa287dd4c0724259f414ea468434dbf82",
            "entryPoint":"0x0000000071727De22E5E9d8BAf0edAc6f37da032",
            "sender":"0x1111111111111111111111111111111111111111","nonce":"0x0",
            "paymaster":"0x0000000000000000000000000000000000000000",
            "actualGasCost":"0x10","actualGasUsed":"0x20","success":true,"reason":"0x","logs":[],
            "receipt":{"transactionHash":"0x0000000000000000000000000000000000000000000000000000000000000001",
                       "blockNumber":"0x5","status":"0x1","from":"0x2222222222222222222222222222222222222222"}}}"#;
        let (url, _server) = serve(vec![
            (200, r#"{"jsonrpc":"2.0","id":1,"result":null}"#.to_string()),
            (200, receipt.to_string()),
            (200, r#"{"jsonrpc":"2.0","id":4,"result":{"preVerificationGas":"0xc350","verificationGasLimit":"0x7a120","callGasLimit":"0x186a0"}}"#.to_string()),
            (200, r#"{"jsonrpc":"2.0","id":5,"result":{"slow":{"maxFeePerGas":"0x2","maxPriorityFeePerGas":"0x1"},"standard":{"maxFeePerGas":"0x4","maxPriorityFeePerGas":"0x2"},"fast":{"maxFeePerGas":"0x6","maxPriorityFeePerGas":"0x3"}}}"#.to_string()),
        ])
        .await;
        let client = BundlerClient::new(url).unwrap();
        let hash: B256 = "0x6226d388b9eeafd16264b979d58847aaa287dd4c0724259f414ea468434dbf82"
            .parse()
            .unwrap();
        let expected = ExpectedReceipt {
            user_op_hash: hash,
            entry_point: kms_contracts::ENTRY_POINT_V07,
            sender: address!("1111111111111111111111111111111111111111"),
            nonce: U256::ZERO,
        };
        let r = client
            .wait_for_receipt(
                &expected,
                Duration::from_secs(10),
                Duration::from_millis(10),
            )
            .await
            .unwrap();
        assert!(r.success);
        assert_eq!(r.receipt.block_number, U256::from(5));
        assert_eq!(r.receipt.status, Some(U256::from(1)));
        assert_eq!(
            r.receipt.other["from"],
            "0x2222222222222222222222222222222222222222"
        );

        let gas = client
            .estimate_user_operation_gas(&op(), kms_contracts::ENTRY_POINT_V07)
            .await
            .unwrap();
        let limits = GasLimits::try_from(&gas).unwrap();
        assert_eq!(
            (limits.verification_gas_limit, limits.call_gas_limit),
            (500_000, 100_000)
        );
        let prices = client.user_operation_gas_price().await.unwrap();
        assert_eq!(prices.fast.as_u128s().unwrap(), (6, 3));
    }

    fn receipt_json(hash: &str, entry_point: &str, sender: &str, nonce: &str) -> String {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"userOpHash":"{hash}","entryPoint":"{entry_point}",
            "sender":"{sender}","nonce":"{nonce}","actualGasCost":"0x10","actualGasUsed":"0x20",
            "success":true,"logs":[],"receipt":{{"transactionHash":"0x{tx}","blockNumber":"0x5"}}}}}}"#,
            tx = "11".repeat(32)
        )
    }

    #[tokio::test]
    async fn a_receipt_for_another_operation_is_refused() {
        let hash = format!("0x{}", "ab".repeat(32));
        let ep = kms_contracts::ENTRY_POINT_V07.to_string();
        let sender = "0x1111111111111111111111111111111111111111";
        let expected = ExpectedReceipt {
            user_op_hash: hash.parse().unwrap(),
            entry_point: kms_contracts::ENTRY_POINT_V07,
            sender: sender.parse().unwrap(),
            nonce: U256::from(7),
        };
        // Each lie in turn: another hash, EntryPoint, sender, nonce; then the truth.
        let (url, _server) = serve(vec![
            (
                200,
                receipt_json(&format!("0x{}", "cd".repeat(32)), &ep, sender, "0x7"),
            ),
            (
                200,
                receipt_json(
                    &hash,
                    &kms_contracts::ENTRY_POINT_V08.to_string(),
                    sender,
                    "0x7",
                ),
            ),
            (
                200,
                receipt_json(
                    &hash,
                    &ep,
                    "0x2222222222222222222222222222222222222222",
                    "0x7",
                ),
            ),
            (200, receipt_json(&hash, &ep, sender, "0x8")),
            (200, receipt_json(&hash, &ep, sender, "0x7")),
        ])
        .await;
        let client = BundlerClient::new(url).unwrap();
        for field in ["userOpHash", "entryPoint", "sender", "nonce"] {
            let err = client.checked_receipt(&expected).await.unwrap_err();
            assert!(
                matches!(&err, BundlerError::ReceiptMismatch { field: f, .. } if *f == field),
                "{field}: {err:?}"
            );
        }
        let ok = client.checked_receipt(&expected).await.unwrap().unwrap();
        assert_eq!(ok.nonce, U256::from(7));
    }

    #[tokio::test]
    async fn a_flood_is_cut_at_the_cap_and_errors_quote_only_a_prefix() {
        let limits = HttpLimits {
            max_body_bytes: 64 * 1024,
            ..HttpLimits::default()
        };
        let flood = "x".repeat(1 << 20);
        let long_message = format!(
            r#"{{"jsonrpc":"2.0","id":1,"error":{{"code":-32500,"message":"AA23 {}"}}}}"#,
            "y".repeat(40_000)
        );
        let (url, _server) = serve(vec![
            (200, flood.clone()),
            (502, "z".repeat(50_000)),
            (200, long_message),
        ])
        .await;
        let client = BundlerClient::with_limits(url, limits).unwrap();
        let err = client.supported_entry_points().await.unwrap_err();
        assert!(
            matches!(err, BundlerError::TooLarge { limit: 65536, .. }),
            "{err:?}"
        );
        let err = client.supported_entry_points().await.unwrap_err();
        let BundlerError::Http { status: 502, body } = &err else {
            panic!("{err:?}")
        };
        assert!(body.len() < 400, "{}", body.len());
        assert!(body.ends_with("(50000 bytes in all)"), "{body}");
        let err = client.supported_entry_points().await.unwrap_err();
        assert_eq!(err.aa_code(), Some("AA23"));
        assert!(
            err.to_string().len() < MAX_ERROR_MESSAGE_CHARS + 100,
            "{}",
            err.to_string().len()
        );
    }

    #[tokio::test]
    async fn a_stalled_bundler_times_out() {
        // Accepts the connection and never answers.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let _hold = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (sock, _) = listener.accept().await.unwrap();
                held.push(sock);
            }
        });
        let limits = HttpLimits {
            timeout: Duration::from_millis(300),
            ..HttpLimits::default()
        };
        let client = BundlerClient::with_limits(url, limits).unwrap();
        let err = tokio::time::timeout(Duration::from_secs(30), client.supported_entry_points())
            .await
            .expect("the client's own timeout ends the request")
            .unwrap_err();
        let BundlerError::Transport(e) = &err else {
            panic!("{err:?}")
        };
        assert!(e.is_timeout(), "{e:?}");
        assert!(err.is_transient());
    }
}
