//! Opening what a command needs — database, TA session, node — from the configuration, each
//! only when a command asks for it, with its failure mapped to its exit code.

use std::time::Duration;

use alloy::primitives::Address;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use kms_chain::node::NodeClient;
use kms_db::{Db, DbOptions};
use kms_tee_client::{TeeBackend, TeeClient, TeeError};

use crate::cli::AdminConfig;
use crate::error::{AdminError, Exit, Result};

/// The configuration in force, and lazily opened handles.
#[derive(Debug)]
pub struct Ctx {
    /// The configuration.
    pub config: AdminConfig,
}

impl Ctx {
    /// A context over `config`.
    pub fn new(config: AdminConfig) -> Self {
        Self { config }
    }

    /// The database URL in force (`sqlite://<DATA_DIR>/kms.db` unless configured).
    pub fn database_url(&self) -> String {
        self.config
            .database_url
            .clone()
            .unwrap_or_else(|| kms_db::default_database_url(&self.config.data_dir))
    }

    /// The TEE backend string in force (`sim:<DATA_DIR>/ta.sock` unless configured).
    pub fn tee_backend(&self) -> String {
        self.config
            .tee
            .clone()
            .unwrap_or_else(|| TeeBackend::default_for_data_dir(&self.config.data_dir).to_string())
    }

    /// Opens the existing database (never creates one; migrations it lacks are applied, as
    /// the companion would at start).
    pub async fn db(&self) -> Result<Db> {
        let opts = DbOptions {
            max_connections: 2,
            create_if_missing: false,
            ..DbOptions::default()
        };
        Ok(Db::open_with(&self.database_url(), &opts).await?)
    }

    /// Opens a session to the TA (its own, beside the companion's).
    pub fn tee(&self) -> Result<TeeClient> {
        let backend: TeeBackend = self.tee_backend().parse().map_err(|e| {
            AdminError::new(Exit::NotConfigured, format!("{e}"))
                .hint("set --tee / KMS_TEE_BACKEND to sim:<socket path> or optee")
        })?;
        Ok(backend.connect()?)
    }

    /// The RPC URL, if configured (parsed; a malformed one is a configuration error).
    pub fn rpc_url(&self) -> Result<Option<reqwest::Url>> {
        match self.config.rpc_url.as_deref() {
            None | Some("") => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|_| {
                // The URL itself is not printed: it may carry an API key.
                AdminError::new(Exit::NotConfigured, "the RPC URL is not a valid URL")
                    .hint("check --rpc-url / KMS_RPC_URL")
            }),
        }
    }

    /// The validator address, if configured.
    pub fn validator(&self) -> Result<Option<Address>> {
        match self.config.validator_address.as_deref() {
            None | Some("") => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|_| {
                AdminError::new(
                    Exit::NotConfigured,
                    format!("the validator address {s:?} is not an address"),
                )
                .hint("check --validator-address / KMS_VALIDATOR_ADDRESS")
            }),
        }
    }

    /// Whether both the RPC URL and the validator address are configured.
    pub fn chain_configured(&self) -> bool {
        self.config
            .rpc_url
            .as_deref()
            .is_some_and(|s| !s.is_empty())
            && self
                .config
                .validator_address
                .as_deref()
                .is_some_and(|s| !s.is_empty())
    }

    /// Connects to the node and checks it (chain id, validator code). Needs the RPC URL and
    /// the validator address.
    pub async fn node(&self) -> Result<NodeClient> {
        let (Some(url), Some(validator)) = (self.rpc_url()?, self.validator()?) else {
            return Err(AdminError::new(
                Exit::NotConfigured,
                "the chain is not configured: an RPC URL and the SessionKeyValidator address \
                 are needed",
            )
            .hint("set --rpc-url / KMS_RPC_URL and --validator-address / KMS_VALIDATOR_ADDRESS"));
        };
        NodeClient::connect(url, validator, self.config.chain_id)
            .await
            .map_err(chain_error)
    }

    /// A bare node provider (for balances; needs only the RPC URL), with the chain id
    /// checked against the configured one. `None` when no RPC URL is configured.
    pub async fn provider(&self) -> Result<Option<(DynProvider, u64)>> {
        let Some(url) = self.rpc_url()? else {
            return Ok(None);
        };
        let provider = ProviderBuilder::new().connect_http(url).erased();
        let chain_id = tokio::time::timeout(Duration::from_secs(30), provider.get_chain_id())
            .await
            .map_err(|_| rpc_unreachable("calling eth_chainId: timed out"))?
            .map_err(|e| rpc_unreachable(format!("calling eth_chainId: {}", self.redact(&e))))?;
        if let Some(configured) = self.config.chain_id.filter(|c| *c != chain_id) {
            return Err(AdminError::new(
                Exit::Failure,
                format!("chain id mismatch: node {chain_id}, configured {configured}"),
            ));
        }
        Ok(Some((provider, chain_id)))
    }

    /// `e` as text with the RPC URL cut out.
    pub fn redact(&self, e: &dyn std::fmt::Display) -> String {
        let mut s = e.to_string();
        if let Some(url) = self.config.rpc_url.as_deref().filter(|u| !u.is_empty()) {
            s = s.replace(url, "<rpc url>");
            s = s.replace(url.trim_end_matches('/'), "<rpc url>");
        }
        s
    }
}

/// This host's TA's operator address (`0x` lowercase hex, the name `wallets.ta_id` and
/// `jwt_secret_meta` give a TA), `None` when the TA has no operator key yet.
pub async fn this_ta(tee: &TeeClient) -> std::result::Result<Option<String>, TeeError> {
    match tee
        .call_async(&kms_proto::OperatorKey {
            create_if_missing: false,
        })
        .await
    {
        Ok(op) => Ok(Some(format!("{:#x}", Address::from(op.address)))),
        Err(TeeError::Ta(kms_proto::TaError::OperatorKeyMissing)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The name this host's TA's rows have in `jwt_secret_meta`: [`this_ta`], or
/// [`kms_db::UNNAMED_TA`] for a TA without an operator key (its rows are then recorded under the
/// name of the next TA with one to sync, see `kms_db`'s `jwt_meta`).
pub async fn jwt_meta_ta(tee: &TeeClient) -> Result<String> {
    Ok(this_ta(tee)
        .await?
        .unwrap_or_else(|| kms_db::UNNAMED_TA.to_owned()))
}

/// Refuses a command that acts on wallet `wallet` through this host's TA when the database
/// records the wallet on another TA (several TAs over one database, docs/DEPLOY.md): exit 9,
/// naming the wallet's TA and this one, before anything is sent to the TA. A TA is named by its
/// operator key's address (`wallets.ta_id`); a TA without an operator key holds no wallet
/// recorded on a TA. Goes ahead when the wallet is unknown to the database or has no TA recorded
/// (older than the record: the database had one TA), and when this TA does not answer (the
/// command's own TA call then fails on it, and nothing reaches another TA).
pub async fn require_wallet_on_this_ta(db: &Db, tee: &TeeClient, wallet: &str) -> Result<()> {
    let Some(Some(wallet_ta)) = db.wallet_ta(wallet).await? else {
        return Ok(());
    };
    let this_ta = match this_ta(tee).await {
        Ok(Some(ta)) => ta,
        Ok(None) => "(none: this TA has no operator key)".to_owned(),
        Err(_) => return Ok(()),
    };
    if wallet_ta == this_ta {
        return Ok(());
    }
    let checksum = |a: &str| {
        a.parse::<Address>()
            .map_or_else(|_| a.to_owned(), |a| a.to_checksum(None))
    };
    let (wallet_ta, this_ta) = (checksum(&wallet_ta), checksum(&this_ta));
    Err(AdminError::new(
        Exit::OtherTa,
        format!(
            "wallet {wallet} is held by TA {wallet_ta}, not by this host's TA {this_ta}: nothing \
             was done"
        ),
    )
    .hint(format!(
        "run kms-admin on a board of TA {wallet_ta} (--tee / KMS_TEE_BACKEND names this host's \
         TA)"
    )))
}

/// An RPC failure (exit 6).
pub fn rpc_unreachable(message: impl Into<String>) -> AdminError {
    AdminError::new(Exit::RpcUnreachable, message)
        .hint("is the node up? The URL is set with --rpc-url / KMS_RPC_URL (it is never printed)")
}

/// A chain-crate error with its exit code: node failures are "RPC unreachable", the rest
/// failures of the operation.
pub fn chain_error(e: kms_chain::client::ChainError) -> AdminError {
    use kms_chain::client::ChainError;
    match e {
        ChainError::Node { .. } => rpc_unreachable(e.to_string()),
        ChainError::OperatorSigner(e) => match kms_companion::tee::tee_failure(e) {
            Ok(t) => AdminError::tee(t),
            Err(e) => AdminError::new(Exit::Failure, ChainError::OperatorSigner(e).to_string()),
        },
        other => AdminError::new(Exit::Failure, other.to_string()),
    }
}
