//! The chain side of the companion: the [`kms_chain::client::ChainClient`] of the configured
//! EntryPoint, the per-agent nonce tracker, the TA's operator key, and the one mapping of chain,
//! bundler and policy errors to HTTP.
//!
//! Statuses: a policy refusal (the pre-check, or the validator's named error from the bundler) is
//! 403 with the refusal code (`target_not_allowed`, `over_budget`, `session_expired`,
//! `session_not_yet_valid`, `session_revoked`, `no_session`) and details; any other verdict of the
//! bundler on the operation is 422 `bundler_rejected` with the bundler's JSON-RPC code, `AAxx`
//! code, message and decoded revert in `details`; an account without funds for gas is 422
//! `account_unfunded`; an account that is not of the kind a step needs (not ERC-7579) is 422
//! `unsupported_account`; a bundler or node that cannot be reached is 502; chain routes on a
//! companion without chain settings are 503 `chain_not_configured`.

use std::time::Duration;

use alloy::primitives::{Address, B256};
use axum::http::StatusCode;
use kms_chain::bundler::BundlerError;
use kms_chain::client::{ChainClient, ChainConfig, ChainError, Erc7579Error};
use kms_chain::nonce::NonceTracker;
use kms_chain::session::{Refusal, ValidityMargins};
use kms_chain::userop::{EntryPoint, EntryPointVersion};
use serde_json::json;

use crate::config::{ChainSettings, Config};
use crate::error::{ApiError, ErrorCode};

/// The chain routes' state (present when the chain settings are given).
#[derive(Debug)]
pub struct ChainState {
    /// The client of the configured EntryPoint.
    pub client: ChainClient,
    /// One lock and in-flight record per (account, agent nonce key).
    pub nonces: NonceTracker,
    /// Validity margins of the pre-check.
    pub margins: ValidityMargins,
    /// How long `/kms/agent-sessions` waits for inclusion.
    pub receipt_wait: Duration,
    /// When status reads last looked each open intent up on chain.
    pub intent_checks: IntentChecks,
}

/// When each open intent was last looked up on chain for `GET /agent/intents/{userOpHash}`:
/// within [`IntentChecks::every`] of that, a read is answered from the database, so polling
/// agents cost the bundler at most one request per intent per interval. A young intent (less
/// than [`IntentChecks::young_for`] seconds since it was recorded: it is usually included within
/// a block or two) is looked up at most once per [`IntentChecks::young_every`] instead, so an
/// agent polling from the 202 sees it `included` soon after it is, while a flood of reads still
/// costs at most one bundler request per intent per that interval. Bounded: at most
/// [`IntentChecks::MAX_TRACKED`] hashes are remembered.
#[derive(Debug)]
pub struct IntentChecks {
    last: std::sync::Mutex<std::collections::HashMap<B256, std::time::Instant>>,
    every: Duration,
    young_for: i64,
    young_every: Duration,
}

impl IntentChecks {
    /// Most hashes remembered; past it, the expired ones are forgotten (all, if none expired).
    pub const MAX_TRACKED: usize = 16_384;

    /// How long an intent counts as young by default (seconds since it was recorded).
    pub const YOUNG_FOR_SECS: i64 = 10;
    /// How often a young intent is looked up at most, by default.
    pub const YOUNG_EVERY: Duration = Duration::from_millis(100);

    /// Look an intent up on chain at most once per `every`, a young one at most once per
    /// [`IntentChecks::YOUNG_EVERY`] (never less often than `every`).
    pub fn new(every: Duration) -> Self {
        Self::with_young(every, Self::YOUNG_FOR_SECS, Self::YOUNG_EVERY)
    }

    /// Look an intent up on chain at most once per `every`; one recorded less than `young_for`
    /// seconds ago at most once per `young_every` (or `every`, if shorter).
    pub fn with_young(every: Duration, young_for: i64, young_every: Duration) -> Self {
        Self {
            last: Default::default(),
            every,
            young_for,
            young_every: young_every.min(every),
        }
    }

    /// How long an intent counts as young (seconds since it was recorded).
    pub fn young_for(&self) -> i64 {
        self.young_for
    }

    /// The interval for young intents.
    pub fn young_every(&self) -> Duration {
        self.young_every
    }

    /// The interval.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// Whether a read of `hash`, recorded `age_secs` seconds ago, should look on chain now; if
    /// so, records that it does.
    pub fn due(&self, hash: B256, age_secs: i64) -> bool {
        let now = std::time::Instant::now();
        let interval = if age_secs < self.young_for {
            self.young_every
        } else {
            self.every
        };
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last
            .get(&hash)
            .is_some_and(|t| now.duration_since(*t) < interval)
        {
            return false;
        }
        if last.len() >= Self::MAX_TRACKED {
            last.retain(|_, t| now.duration_since(*t) < self.every);
            if last.len() >= Self::MAX_TRACKED {
                last.clear();
            }
        }
        last.insert(hash, now);
        true
    }
}

impl ChainState {
    /// Connects to the node and the bundler with the start-up checks of
    /// [`ChainClient::connect`].
    pub async fn connect(settings: &ChainSettings, config: &Config) -> Result<Self, String> {
        let version: EntryPointVersion = settings
            .entry_point_version
            .parse()
            .map_err(|e| format!("--entry-point-version: {e}"))?;
        let entry_point = EntryPoint {
            version,
            address: settings
                .entry_point
                .map(Address::from)
                .unwrap_or_else(|| version.canonical_address()),
        };
        let mut chain = ChainConfig::new(
            settings.rpc_url.clone(),
            settings.bundler_url.clone(),
            entry_point,
            Address::from(settings.factory),
            Address::from(settings.validator),
        );
        chain.expected_chain_id = settings.chain_id;
        chain.eip7702_delegate = settings.eip7702_account.map(Address::from);
        chain.http = config.chain_http_limits();
        chain.ceilings = config.gas_ceilings();
        let client = ChainClient::connect(chain)
            .await
            .map_err(|e| format!("chain settings: {e}"))?;
        Ok(Self {
            client,
            nonces: NonceTracker::new(),
            margins: ValidityMargins {
                min_remaining_secs: config.session_margin_secs,
                // EntryPoint v0.8 treats validAfter as exclusive (`block.timestamp <= validAfter`
                // is not due yet), v0.7 as inclusive.
                min_elapsed_secs: match version {
                    EntryPointVersion::V07 => 0,
                    EntryPointVersion::V08 => 1,
                },
            },
            receipt_wait: Duration::from_secs(config.receipt_wait_secs),
            intent_checks: IntentChecks::new(Duration::from_secs(config.intent_poll_secs)),
        })
    }
}

/// 503 for chain routes without chain settings.
pub fn not_configured() -> ApiError {
    ApiError::detailed(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::ChainNotConfigured,
        "this companion has no chain settings (--rpc-url, --bundler-url, --validator-address, \
         --account-factory)",
        json!({}),
    )
}

/// A pre-check refusal as 403 with its code and details.
pub fn refusal(r: &Refusal) -> ApiError {
    let details = match r {
        Refusal::NoSession { account, key } | Refusal::SessionRevoked { account, key } => {
            json!({"account": account, "agentAddress": key})
        }
        Refusal::SessionNotYetValid { valid_after, now } => {
            json!({"validAfter": valid_after, "now": now})
        }
        Refusal::SessionExpired {
            valid_until,
            now,
            margin_secs,
        } => json!({"validUntil": valid_until, "now": now, "marginSecs": margin_secs}),
        Refusal::TargetNotAllowed { target, problem } => {
            json!({"target": target, "problem": problem})
        }
        Refusal::OverBudget {
            requested,
            available,
            remaining,
            in_flight,
        } => json!({
            "requested": requested.to_string(),
            "available": available.to_string(),
            "remainingBudget": remaining.to_string(),
            "inFlight": in_flight.to_string(),
        }),
        Refusal::PeriodEnding {
            period_index,
            ends_at,
            now,
            margin_secs,
        } => json!({"periodIndex": period_index, "endsAt": ends_at, "now": now,
            "marginSecs": margin_secs, "retryAfterSecs": ends_at.saturating_add(1).saturating_sub(*now)}),
        Refusal::PeriodOverBudget {
            period_index,
            requested,
            available,
            remaining,
            in_flight,
            resets_at,
        } => json!({
            "periodIndex": period_index,
            "requested": requested.to_string(),
            "available": available.to_string(),
            "remainingPeriodBudget": remaining.to_string(),
            "inFlight": in_flight.to_string(),
            "resetsAt": resets_at,
        }),
        Refusal::UsageExhausted {
            max_ops,
            used,
            in_flight,
        } => json!({"maxOps": max_ops, "used": used, "inFlight": in_flight, "remaining": 0}),
        Refusal::GasOverBudget {
            max_cost,
            available,
            remaining,
            in_flight,
        } => json!({
            "maxGasCost": max_cost.to_string(),
            "available": available.to_string(),
            "remainingGasBudget": remaining.to_string(),
            "inFlight": in_flight.to_string(),
        }),
        Refusal::SelectorNotAllowed { target, selector } => {
            json!({"target": target, "selector": selector})
        }
        Refusal::MalformedTokenCall { token, selector } => {
            json!({"token": token, "selector": selector})
        }
        Refusal::TokenOverBudget {
            token,
            requested,
            available,
            remaining,
            in_flight,
        } => json!({
            "token": token,
            "requested": requested.to_string(),
            "available": available.to_string(),
            "remainingTokenBudget": remaining.to_string(),
            "inFlight": in_flight.to_string(),
        }),
    };
    ApiError::detailed(
        StatusCode::FORBIDDEN,
        ErrorCode::Refusal(r.code()),
        r.to_string(),
        details,
    )
}

/// A bundler error as HTTP (see the module docs).
pub fn bundler_error(e: &BundlerError, account: Option<Address>) -> ApiError {
    if let Some(rej) = e.rejection() {
        let details = serde_json::to_value(&rej).unwrap_or_else(|_| json!({}));
        if let Some(code) = rej.revert.as_ref().and_then(|r| r.refusal_code()) {
            return ApiError::detailed(
                StatusCode::FORBIDDEN,
                ErrorCode::Refusal(code),
                format!("the chain refuses the operation: {}", rej.message),
                details,
            );
        }
        if rej.aa_code.as_deref() == Some("AA21") {
            let who = account.map(|a| format!(" {a}")).unwrap_or_default();
            return ApiError::detailed(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::AccountUnfunded,
                format!("the account{who} cannot pay for gas: fund it (AA21 didn't pay prefund)"),
                details,
            );
        }
        return ApiError::detailed(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::BundlerRejected,
            format!("the bundler refused the operation: {}", rej.message),
            details,
        );
    }
    ApiError::detailed(
        StatusCode::BAD_GATEWAY,
        ErrorCode::BundlerUnavailable,
        format!("the bundler could not be used: {e}"),
        json!({}),
    )
}

/// A chain client error as HTTP (see the module docs).
pub fn chain_error(e: ChainError, account: Option<Address>) -> ApiError {
    match e {
        ChainError::Bundler(b) => bundler_error(&b, account),
        ChainError::Node { .. } => ApiError::detailed(
            StatusCode::BAD_GATEWAY,
            ErrorCode::ChainUnavailable,
            e.to_string(),
            json!({}),
        ),
        ChainError::NoCalls(_) => ApiError::unprocessable(ErrorCode::NoCalls, e.to_string()),
        ChainError::InvalidGrant(_) => ApiError::unprocessable(ErrorCode::InvalidSession, e.to_string()),
        ChainError::NoSession { account, key } => refusal(&Refusal::NoSession { account, key }),
        // An ERC-7579 step the account cannot take (not a 7579 account, the module not installed,
        // an AgentAccount factory deployment asked of one): refused before anything is signed.
        ChainError::Erc7579(ref x) => {
            let details = match x {
                Erc7579Error::NotErc7579 { account, found } => {
                    json!({"account": account, "found": found})
                }
                Erc7579Error::ModuleNotInstalled { account } => json!({"account": account}),
                Erc7579Error::NotAnEoa { account, found } => {
                    json!({"account": account, "found": found})
                }
                Erc7579Error::Eip7702Unavailable { needs } => json!({"needs": needs}),
                Erc7579Error::FactoryInit | Erc7579Error::Period(_) => json!({}),
            };
            ApiError::detailed(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::UnsupportedAccount,
                e.to_string(),
                details,
            )
        }
        ChainError::NotRevoker { .. } => ApiError::Conflict {
            code: ErrorCode::NotRevoker,
            message: e.to_string(),
        },
        ChainError::AboveCeiling {
            ceiling,
            value,
            limit,
        } => ApiError::detailed(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::GasAboveCeiling,
            format!(
                "the quoted {ceiling} ({value}) is over this companion's ceiling ({limit});                  nothing was signed: retry when fees fall, or ask the operator"
            ),
            json!({"field": ceiling.name(), "value": value.to_string(), "ceiling": limit.to_string()}),
        ),
        ChainError::OperatorSigner(e) => match crate::tee::tee_failure(e) {
            Ok(t) => t.into(),
            Err(e) => ApiError::internal(format!("operator signature: {e}")),
        },
        // The network's fees (or the gas estimate) are above the TA's ceilings for the
        // operator's transactions: nothing was signed.
        ChainError::OperatorCeiling(_) => ApiError::detailed(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::OperatorLimit,
            e.to_string(),
            json!({}),
        ),
        ChainError::TransactionReverted { .. } | ChainError::TransactionTimeout { .. } => {
            ApiError::detailed(
                StatusCode::BAD_GATEWAY,
                ErrorCode::TransactionFailed,
                e.to_string(),
                json!({}),
            )
        }
        other => ApiError::internal(format!("chain: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intent_checks_look_on_chain_once_per_interval_and_stay_bounded() {
        let checks = IntentChecks::new(Duration::from_secs(3600));
        let old = IntentChecks::YOUNG_FOR_SECS;
        let a = B256::repeat_byte(1);
        assert!(checks.due(a, old));
        assert!(
            !checks.due(a, old),
            "within the interval: from the database"
        );
        assert!(
            checks.due(B256::repeat_byte(2), old),
            "each intent has its own"
        );
        for i in 0..IntentChecks::MAX_TRACKED as u64 + 10 {
            checks.due(B256::from(U256::from(i + 1000)), old);
        }
        assert!(checks.last.lock().unwrap().len() <= IntentChecks::MAX_TRACKED);
        let every_time = IntentChecks::new(Duration::ZERO);
        assert!(every_time.due(a, old) && every_time.due(a, old));
    }

    #[test]
    fn young_intents_are_looked_up_at_their_own_interval() {
        // Young intents on every read (no minimum), old ones once an hour.
        let checks = IntentChecks::with_young(Duration::from_secs(3600), 10, Duration::ZERO);
        let a = B256::repeat_byte(1);
        assert!(checks.due(a, 0));
        assert!(checks.due(a, 0), "young: looked up on each read");
        assert!(checks.due(a, 9));
        assert!(!checks.due(a, 10), "no longer young: the long interval");
        assert!(!checks.due(a, 60));
        // A minimum interval for young intents holds a flood of reads back.
        let floor =
            IntentChecks::with_young(Duration::from_secs(3600), 10, Duration::from_secs(60));
        assert!(floor.due(a, 0));
        assert!(
            !floor.due(a, 0),
            "within the young interval: from the database"
        );
        // The young interval is never longer than the long one.
        let short = IntentChecks::with_young(Duration::ZERO, 10, Duration::from_secs(60));
        assert_eq!(short.young_every(), Duration::ZERO);
        assert!(short.due(a, 0) && short.due(a, 0));
        // The defaults: young for a few seconds, a short interval.
        let d = IntentChecks::new(Duration::from_secs(2));
        assert_eq!(d.young_for(), IntentChecks::YOUNG_FOR_SECS);
        assert!(d.young_every() < d.every());
    }
    use alloy::primitives::{address, U256};
    use alloy::sol_types::SolError;

    #[test]
    fn refusals_are_403_with_codes() {
        let e = refusal(&Refusal::OverBudget {
            requested: U256::from(10),
            available: U256::from(3),
            remaining: U256::from(5),
            in_flight: U256::from(2),
        });
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        assert_eq!(e.code(), "over_budget");
        let ApiError::Detailed { details, .. } = e else {
            panic!()
        };
        assert_eq!(details["available"], "3");
    }

    #[test]
    fn bundler_verdicts() {
        let inner = kms_contracts::SessionKeyValidator::SessionIsRevoked {
            account: Address::ZERO,
            key: Address::ZERO,
        }
        .abi_encode();
        let revoked = BundlerError::Rpc {
            code: -32500,
            message: format!(
                "UserOperation reverted with reason: AA23 reverted 0x{}",
                alloy::primitives::hex::encode(inner)
            ),
            data: None,
        };
        let e = bundler_error(&revoked, None);
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::FORBIDDEN, "session_revoked")
        );
        let unfunded = BundlerError::Rpc {
            code: -32500,
            message: "AA21 didn't pay prefund".into(),
            data: None,
        };
        let e = bundler_error(
            &unfunded,
            Some(address!("0x1111111111111111111111111111111111111111")),
        );
        assert_eq!(e.code(), "account_unfunded");
        assert!(e
            .to_string()
            .contains("0x1111111111111111111111111111111111111111"));
        let other = BundlerError::Rpc {
            code: -32602,
            message: "AA25 invalid account nonce".into(),
            data: None,
        };
        let e = bundler_error(&other, None);
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "bundler_rejected")
        );
        let ApiError::Detailed { details, .. } = e else {
            panic!()
        };
        assert_eq!(details["aaCode"], "AA25");
        assert_eq!(details["rpcCode"], -32602);
        let not_7579 = chain_error(
            ChainError::Erc7579(Erc7579Error::NotErc7579 {
                account: Address::repeat_byte(1),
                found: "agent-account",
            }),
            None,
        );
        assert_eq!(
            (not_7579.status(), not_7579.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "unsupported_account")
        );
        let down = BundlerError::Http {
            status: 503,
            body: String::new(),
        };
        assert_eq!(bundler_error(&down, None).status(), StatusCode::BAD_GATEWAY);
    }
}
