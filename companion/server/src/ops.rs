//! The operations a passkey ceremony can authorise: their request types and
//! the ONE place that turns a request into the exact TA body. Both
//! `/BeginAuthentication` (from `Purpose` + `Payload`) and the operation
//! endpoints call these builders, so the digest the ceremony commits to is
//! the digest of the body the TA will act on.

use kms_proto::authz::{self, AuthorizedBody};
use kms_proto::{AccountSignContent, SignForAccountBody};
use kms_proto::{
    ChangePasskeyBody, CommandId, DeriveAddressBody, GetPublicKeyBody, HdPath, MintAgentBody,
    RefreshAgentBody, RemoveWalletBody, RevokeAgentKey, SignHashBody, SignMessageBody,
    SignTransactionBody, Transaction, WalletId,
};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use webauthn_rs::prelude::Passkey;

use crate::error::{ApiError, ErrorCode};
use crate::extract::{from_value, hex_bytes, hex_fixed, uint128, uint256, uint64};
use crate::state::AppState;
use crate::webauthn::{CeremonyResponse, Purpose};

/// Purpose of the registration ceremony of a new passkey for an existing
/// wallet.
pub const CHANGE_PASSKEY_REGISTRATION: &str = "ChangePasskey";
/// Purpose of the registration ceremony of a new wallet.
pub const NEW_WALLET_REGISTRATION: &str = "Register";

// ------------------------------------------------------------- requests

/// `/SignHash`: a raw ECDSA signature over `Hash` as given, or, with `Account`, the
/// ERC-7739 wrapping of `Hash` for that smart account (see the route's description).
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SignHashRequest {
    /// Wallet id (or give `Address`).
    #[serde(default)]
    pub key_id: Option<String>,
    /// An address of the wallet recorded by DeriveAddress (or the owner
    /// address), instead of KeyId + DerivationPath.
    #[serde(default)]
    pub address: Option<String>,
    /// `m/44'/60'/0'/<c>/<i>` [default: `m/44'/60'/0'/0/0`].
    #[serde(default)]
    pub derivation_path: Option<String>,
    /// The 32-byte digest to sign, hex. Without `Account` it is signed as is (raw ECDSA): only
    /// sign digests you computed yourself.
    pub hash: String,
    /// The owner's smart account (`AgentAccount`, 20-byte hex). With it the signature is not
    /// over `Hash` but over the ERC-7739 `PersonalSign` digest of `Hash` in that account's
    /// EIP-712 domain (`name` "AgentAccount", `version` "1", the companion's chain id,
    /// `verifyingContract` = `Account`): what the account's `isValidSignature(Hash, signature)`
    /// accepts, on that account and chain only. Needs the companion's chain settings.
    #[serde(default)]
    pub account: Option<String>,
    /// The finished ceremony.
    #[serde(default, rename = "WebAuthn")]
    pub web_authn: Option<CeremonyResponse>,
    /// Legacy bare assertion: refused.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub passkey: Option<Value>,
}

/// A transaction to sign (`/Sign`).
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransactionRequest {
    /// `legacy` or `eip1559` [default: eip1559 if maxFeePerGas is given].
    #[serde(default, rename = "type")]
    pub tx_type: Option<String>,
    /// Chain id.
    #[schema(value_type = Object)]
    pub chain_id: Value,
    /// Nonce.
    #[schema(value_type = Object)]
    pub nonce: Value,
    /// Recipient, exactly 20 bytes hex; absent/null for contract creation.
    #[serde(default)]
    pub to: Option<String>,
    /// Value in wei (number, decimal string or 0x hex) [default: 0].
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub value: Option<Value>,
    /// Legacy gas price in wei.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub gas_price: Option<Value>,
    /// Gas limit.
    #[serde(default, alias = "gasLimit")]
    #[schema(value_type = Object)]
    pub gas: Value,
    /// EIP-1559 max fee per gas.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub max_fee_per_gas: Option<Value>,
    /// EIP-1559 max priority fee per gas.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub max_priority_fee_per_gas: Option<Value>,
    /// Call data hex [default: empty].
    #[serde(default)]
    pub data: Option<String>,
}

/// `/Sign`: a message (EIP-191 personal message, or with `Account` its ERC-7739 wrapping for
/// that smart account) or a transaction (see the route's description).
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SignRequest {
    /// Wallet id (or give `Address`).
    #[serde(default)]
    pub key_id: Option<String>,
    /// A recorded address of the wallet.
    #[serde(default)]
    pub address: Option<String>,
    /// Signing key path [default: `m/44'/60'/0'/0/0`].
    #[serde(default)]
    pub derivation_path: Option<String>,
    /// The message: `0x` hex, or UTF-8 text (see MessageEncoding).
    #[serde(default)]
    pub message: Option<String>,
    /// `hex`, `utf8` or `base64` [default: hex if it starts with 0x, else utf8].
    #[serde(default)]
    pub message_encoding: Option<String>,
    /// With `Message` only: the owner's smart account (`AgentAccount`, 20-byte hex). With it
    /// the signature is the ERC-7739 `PersonalSign` one for that account on the companion's
    /// chain (over `keccak256(0x1901 ‖ domainSeparator ‖ keccak256(abi.encode(
    /// keccak256("PersonalSign(bytes prefixed)"), eip191Hash(Message))))`, domain `name`
    /// "AgentAccount", `version` "1", the chain id, `verifyingContract` = `Account`): what the
    /// account's `isValidSignature(eip191Hash(Message), signature)` accepts. Without it the
    /// signature is a plain EIP-191 `personal_sign` of the key (an EOA signature). Needs the
    /// companion's chain settings.
    #[serde(default)]
    pub account: Option<String>,
    /// The transaction.
    #[serde(default)]
    pub transaction: Option<TransactionRequest>,
    /// Ignored (always ECDSA secp256k1).
    #[serde(default)]
    pub signing_algorithm: Option<String>,
    /// The finished ceremony.
    #[serde(default, rename = "WebAuthn")]
    pub web_authn: Option<CeremonyResponse>,
    /// Legacy bare assertion: refused.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub passkey: Option<Value>,
}

/// `/DeriveAddress`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DeriveAddressRequest {
    /// Wallet id.
    pub key_id: String,
    /// `m/44'/60'/0'/<c>/<i>`.
    pub derivation_path: String,
    /// The finished ceremony.
    #[serde(default, rename = "WebAuthn")]
    pub web_authn: Option<CeremonyResponse>,
    /// Legacy bare assertion: refused.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub passkey: Option<Value>,
}

/// `/GetPublicKey`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct GetPublicKeyRequest {
    /// Wallet id.
    pub key_id: String,
    /// A path: derived in the TA under a ceremony. Absent: the owner key
    /// recorded at registration (public, no ceremony).
    #[serde(default)]
    pub derivation_path: Option<String>,
    /// The finished ceremony (with DerivationPath).
    #[serde(default, rename = "WebAuthn")]
    pub web_authn: Option<CeremonyResponse>,
    /// Legacy bare assertion: refused.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub passkey: Option<Value>,
}

/// `/DeleteKey`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DeleteKeyRequest {
    /// Wallet id.
    pub key_id: String,
    /// Accepted for AWS compatibility; deletion is immediate.
    #[serde(default)]
    pub pending_window_in_days: Option<u32>,
    /// The finished ceremony.
    #[serde(default, rename = "WebAuthn")]
    pub web_authn: Option<CeremonyResponse>,
    /// Legacy bare assertion: refused.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub passkey: Option<Value>,
}

/// `/ChangePasskey`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ChangePasskeyRequest {
    /// Wallet id.
    pub key_id: String,
    /// The registration ceremony of the new passkey (started with
    /// `/BeginRegistration {"KeyId": ...}`): proof of possession.
    #[serde(default)]
    pub new_passkey: Option<CeremonyResponse>,
    /// A bare public key: refused (no proof of possession).
    #[serde(default)]
    pub passkey_public_key: Option<String>,
    /// The assertion by the current passkey.
    #[serde(default, rename = "WebAuthn")]
    pub web_authn: Option<CeremonyResponse>,
    /// Legacy bare assertion: refused.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub passkey: Option<Value>,
}

/// `/kms/create-agent-key`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateAgentKeyRequest {
    /// The owner's wallet id.
    pub human_key_id: String,
    /// Free-form label (≤ 128 bytes).
    #[serde(default)]
    pub label: Option<String>,
    /// Credential lifetime in seconds [default: the configured JWT TTL].
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// The finished ceremony.
    #[serde(default, alias = "WebAuthn")]
    pub web_authn_assertion: Option<CeremonyResponse>,
    /// Legacy bare assertion: refused.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub passkey_assertion: Option<Value>,
}

/// `/kms/refresh-agent-credential`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefreshAgentRequest {
    /// Agent key id `"{wallet}:{index}"`.
    pub key_id: String,
    /// New credential lifetime [default: the configured JWT TTL].
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// The finished ceremony.
    #[serde(default, alias = "WebAuthn")]
    pub web_authn_assertion: Option<CeremonyResponse>,
    /// Legacy bare assertion: refused.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub passkey_assertion: Option<Value>,
}

/// `/kms/agent-sessions` (and the `Payload` of its `GrantSession` ceremony, without
/// `webAuthnAssertion`).
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentSessionRequest {
    /// Agent key id `"{wallet}:{index}"`: the key the session is for.
    pub key_id: String,
    /// The call targets and the functions allowed on each (at most 64, no duplicates; a session
    /// needs at least one target or token). A plain address allows only plain transfers (empty
    /// call data) to it; an object `{"target", "selectors", "anySelector"}` also allows the
    /// listed functions (4-byte hex selectors or signatures such as
    /// `"transfer(address,uint256)"`), or every function when `anySelector` is `true` (and
    /// `selectors` empty).
    #[schema(value_type = Vec<Object>)]
    pub targets: Vec<TargetSpec>,
    /// Cap on the cumulative native value the agent may move, in wei (number, decimal string
    /// or `0x` hex; at most 2^128 - 1).
    #[schema(value_type = Object)]
    pub spend_cap: Value,
    /// Cap on what the agent's operations may cost in gas, in wei (at most 2^96 - 1): each
    /// operation is charged its maximum cost `(preVerificationGas + verificationGasLimit +
    /// callGasLimit) × maxFeePerGas`, unused gas is not credited back. Required: `0` means the
    /// account pays no gas for the agent (then only the named `paymaster` can).
    #[schema(value_type = Object)]
    pub gas_cap: Value,
    /// ERC-20 caps: `[{"token", "cap"}]` (cap > 0, in the token's units). A listed token's
    /// `transfer`, `approve`, `increaseAllowance` and `transferFrom(account, …)` are allowed and
    /// counted against its cap; its other functions only with their selectors under `targets`
    /// [default: none].
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub tokens: Vec<TokenSpec>,
    /// The one paymaster the agent's operations may use (never the zero address); then the
    /// account pays no gas and nothing is charged to `gasCap` [default: none].
    #[serde(default)]
    pub paymaster: Option<String>,
    /// Most operations the agent may make in this grant [default: no limit].
    #[serde(default)]
    pub max_ops: Option<u32>,
    /// A periodic budget: the length of a period in seconds (at least 60; e.g. 86400 for "per
    /// day"), counted from `validAfter`; give `periodCap` with it [default: none].
    #[serde(default)]
    pub period: Option<u32>,
    /// Cap on the native value the agent may move in one period, in wei (with `period`; the
    /// total stays capped by `spendCap`) [default: none].
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub period_cap: Option<Value>,
    /// First valid time (unix seconds) [default: 0].
    #[serde(default)]
    pub valid_after: Option<u64>,
    /// Last valid time (unix seconds; 0 = no end) [default: 0].
    #[serde(default)]
    pub valid_until: Option<u64>,
    /// The factory salt of the owner's account [default: 0].
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub salt: Option<Value>,
    /// An existing ERC-7579 account (OpenZeppelin's `AccountERC7579`, …) whose signer is this
    /// wallet's owner key, to grant the session on instead of the owner's `AgentAccount`: the
    /// owner's operation installs `SessionKeyValidator` as its validator module when it is not
    /// installed yet, then grants, in one ERC-7579 batch. Not with `salt`. An account that is not
    /// ERC-7579 (or an `AgentAccount`) is 422 `unsupported_account`; one whose signer is not the
    /// owner key is 422 `not_account_signer` [default: the owner's `AgentAccount` of `salt`].
    #[serde(default)]
    pub account: Option<String>,
    /// The finished `GrantSession` ceremony.
    #[serde(default, alias = "WebAuthn")]
    pub web_authn_assertion: Option<CeremonyResponse>,
    /// Legacy bare assertion: refused.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub passkey_assertion: Option<Value>,
}

/// One entry of [`AgentSessionRequest::targets`]: an address (plain transfers only) or a
/// target with its functions.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum TargetSpec {
    /// Plain transfers to this address only.
    Address(String),
    /// A target with the functions allowed on it.
    Detailed {
        /// The address called.
        target: String,
        /// Allowed functions: 4-byte hex selectors or signatures [default: none].
        #[serde(default)]
        selectors: Vec<String>,
        /// Every function allowed (only with an empty `selectors`) [default: false].
        #[serde(default, rename = "anySelector")]
        any_selector: bool,
    },
}

/// One entry of [`AgentSessionRequest::tokens`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// The ERC-20 token contract.
    pub token: String,
    /// The cap, in the token's units (number, decimal string or `0x` hex; 1 to 2^128 - 1).
    pub cap: Value,
}

/// `/kms/revoke-agent-credential`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevokeAgentRequest {
    /// Agent key id `"{wallet}:{index}"`.
    pub key_id: String,
    /// The finished ceremony.
    #[serde(default, alias = "WebAuthn")]
    pub web_authn_assertion: Option<CeremonyResponse>,
    /// Legacy bare assertion: refused.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub passkey_assertion: Option<Value>,
}

crate::webauthn::carries_ceremony! {
    SignHashRequest => web_authn, passkey;
    SignRequest => web_authn, passkey;
    DeriveAddressRequest => web_authn, passkey;
    GetPublicKeyRequest => web_authn, passkey;
    DeleteKeyRequest => web_authn, passkey;
    ChangePasskeyRequest => web_authn, passkey;
    CreateAgentKeyRequest => web_authn_assertion, passkey_assertion;
    RefreshAgentRequest => web_authn_assertion, passkey_assertion;
    AgentSessionRequest => web_authn_assertion, passkey_assertion;
    RevokeAgentRequest => web_authn_assertion, passkey_assertion;
}

// -------------------------------------------------------------- parsing

/// Parse a wallet id (400).
pub fn wallet_id(s: &str) -> Result<WalletId, ApiError> {
    s.parse()
        .map_err(|_| ApiError::bad_request(ErrorCode::InvalidKeyId, "KeyId must be a wallet UUID"))
}

/// Parse an agent key id `"{wallet}:{index}"` (400).
pub fn agent_key_id(s: &str) -> Result<(WalletId, u32), ApiError> {
    let bad = || {
        ApiError::bad_request(
            ErrorCode::InvalidKeyId,
            "keyId must be \"{wallet_uuid}:{agent_index}\"",
        )
    };
    kms_proto::jwt::parse_key_id(s).ok_or_else(bad)
}

/// Parse a derivation path (422).
pub fn hd_path(s: &str) -> Result<HdPath, ApiError> {
    s.parse().map_err(|e: kms_proto::InvalidHdPath| {
        ApiError::unprocessable(ErrorCode::InvalidDerivationPath, e.to_string())
    })
}

async fn existing_wallet(state: &AppState, key_id: &str) -> Result<WalletId, ApiError> {
    let id = wallet_id(key_id)?;
    let wallet = id.to_uuid_string();
    if state.db.get_wallet(&wallet).await?.is_none() {
        return Err(ApiError::not_found(ErrorCode::KeyNotFound, "key not found"));
    }
    if let Some(w) = crate::replicas::wallet_elsewhere(state, &wallet).await? {
        return Err(w.into());
    }
    Ok(id)
}

/// Resolve `KeyId` (+ path) or `Address` to a wallet and a path.
pub async fn resolve_signer(
    state: &AppState,
    key_id: Option<&str>,
    address: Option<&str>,
    path: Option<&str>,
) -> Result<(WalletId, HdPath), ApiError> {
    let path = path.map(hd_path).transpose()?;
    if let Some(k) = key_id {
        return Ok((
            existing_wallet(state, k).await?,
            path.unwrap_or(HdPath::OWNER),
        ));
    }
    let Some(a) = address else {
        return Err(ApiError::bad_request(
            ErrorCode::MissingKey,
            "KeyId or Address is required",
        ));
    };
    let bytes = hex_fixed::<20>("Address", a)?;
    let rec = state
        .db
        .find_address(alloy::primitives::Address::from(bytes))
        .await?
        .ok_or_else(|| ApiError::not_found(ErrorCode::KeyNotFound, "no key has this address"))?;
    let recorded = hd_path(&rec.derivation_path)?;
    if path.is_some_and(|p| p != recorded) {
        return Err(ApiError::unprocessable(
            ErrorCode::InvalidDerivationPath,
            "DerivationPath does not match the path of Address",
        ));
    }
    Ok((wallet_id(&rec.wallet_id)?, recorded))
}

fn ttl(state: &AppState, requested: Option<u64>) -> Result<u64, ApiError> {
    let t = requested.unwrap_or(state.config.jwt_ttl_secs);
    if t == 0 || t > state.config.jwt_ttl_secs {
        return Err(ApiError::unprocessable(
            ErrorCode::InvalidTtl,
            format!(
                "ttlSecs must be between 1 and {}",
                state.config.jwt_ttl_secs
            ),
        ));
    }
    Ok(t)
}

// ------------------------------------------------------------- builders

/// The smart account of a `/Sign` or `/SignHash` with `Account`, and the companion's chain id
/// (503 `chain_not_configured` without chain settings).
fn account_domain(state: &AppState, account: &str) -> Result<(u64, [u8; 20]), ApiError> {
    let account = hex_fixed::<20>("Account", account)?;
    if account == [0; 20] {
        return Err(ApiError::unprocessable(
            ErrorCode::InvalidValue,
            "Account must be the smart account's address, not the zero address",
        ));
    }
    let chain = state.chain.as_ref().ok_or_else(|| {
        ApiError::detailed(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ChainNotConfigured,
            "Account asks for a signature bound to a smart account on this companion's chain, \
             and this companion has no chain settings (--rpc-url, --bundler-url, \
             --validator-address, --account-factory)",
            serde_json::json!({}),
        )
    })?;
    Ok((chain.client.chain_id(), account))
}

/// The body of a `/SignHash`: `SignHash` (raw), or `SignForAccount` with `Account`.
pub async fn prepare_sign_hash(
    state: &AppState,
    r: &SignHashRequest,
) -> Result<SignBody, ApiError> {
    let hash = hex_fixed::<32>("Hash", &r.hash)?;
    let domain = r
        .account
        .as_deref()
        .map(|a| account_domain(state, a))
        .transpose()?;
    let (wallet_id, path) = resolve_signer(
        state,
        r.key_id.as_deref(),
        r.address.as_deref(),
        r.derivation_path.as_deref(),
    )
    .await?;
    Ok(match domain {
        None => SignBody::Hash(SignHashBody {
            wallet_id,
            path,
            hash,
        }),
        Some((chain_id, account)) => SignBody::ForAccount(SignForAccountBody {
            wallet_id,
            path,
            chain_id,
            account,
            content: AccountSignContent::Hash(hash),
        }),
    })
}

/// The TA body of a `/Sign` or `/SignHash`: the one place that decides what is signed.
#[derive(Clone, Debug)]
pub enum SignBody {
    /// `/Sign` message: EIP-191 personal_sign (`SignMessage`).
    Message(SignMessageBody),
    /// `/Sign` transaction (`SignTransaction`).
    Transaction(SignTransactionBody),
    /// `/SignHash`: the digest as given (`SignHash`).
    Hash(SignHashBody),
    /// `/Sign` message or `/SignHash` with `Account`: the ERC-7739 `PersonalSign` wrapping for
    /// one smart account on one chain (`SignForAccount`).
    ForAccount(SignForAccountBody),
}

impl SignBody {
    /// Its payload digest.
    pub fn digest(&self) -> [u8; 32] {
        match self {
            SignBody::Message(b) => b.payload_digest(),
            SignBody::Transaction(b) => b.payload_digest(),
            SignBody::Hash(b) => b.payload_digest(),
            SignBody::ForAccount(b) => b.payload_digest(),
        }
    }
    /// Its wallet.
    pub fn wallet(&self) -> WalletId {
        match self {
            SignBody::Message(b) => b.wallet_id,
            SignBody::Transaction(b) => b.wallet_id,
            SignBody::Hash(b) => b.wallet_id,
            SignBody::ForAccount(b) => b.wallet_id,
        }
    }
    /// What the signature is (the answer's `SignatureFormat`).
    pub fn format(&self) -> &'static str {
        match self {
            SignBody::Message(_) => "EIP191PersonalSign",
            SignBody::Transaction(_) => "Transaction",
            SignBody::Hash(_) => "RawDigest",
            SignBody::ForAccount(_) => "ERC7739PersonalSign",
        }
    }
}

fn message_bytes(msg: &str, encoding: Option<&str>) -> Result<Vec<u8>, ApiError> {
    use base64::Engine;
    match encoding.map(str::to_ascii_lowercase).as_deref() {
        Some("hex") => hex_bytes("Message", msg),
        Some("utf8") | Some("utf-8") | Some("raw") => Ok(msg.as_bytes().to_vec()),
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(msg)
            .map_err(|_| {
                ApiError::bad_request(ErrorCode::InvalidBase64, "Message is not valid base64")
            }),
        Some(other) => Err(ApiError::unprocessable(
            ErrorCode::InvalidValue,
            format!("unknown MessageEncoding {other:?} (hex, utf8, base64)"),
        )),
        None if msg.starts_with("0x") => hex_bytes("Message", msg),
        None => Ok(msg.as_bytes().to_vec()),
    }
}

/// Build the TA transaction. `to` must be exactly 20 bytes (422).
pub fn transaction(t: &TransactionRequest) -> Result<Transaction, ApiError> {
    let to = match t.to.as_deref() {
        None | Some("") => None,
        Some(s) => {
            let b = hex_bytes("to", s)?;
            if b.len() != 20 {
                return Err(ApiError::unprocessable(
                    ErrorCode::InvalidRecipient,
                    format!(
                        "transaction recipient must be exactly 20 bytes, got {}",
                        b.len()
                    ),
                ));
            }
            Some(b)
        }
    };
    let chain_id = uint64("chainId", &t.chain_id)?;
    let nonce = uint64("nonce", &t.nonce)?;
    let gas_limit = uint64("gas", &t.gas)?;
    let value = t
        .value
        .as_ref()
        .map(|v| uint256("value", v))
        .transpose()?
        .unwrap_or([0; 32]);
    let data = t
        .data
        .as_deref()
        .map(|d| hex_bytes("data", d))
        .transpose()?
        .unwrap_or_default();
    let kind = match t.tx_type.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("legacy") | Some("0x0") | Some("0") => "legacy",
        Some("eip1559") | Some("0x2") | Some("2") => "eip1559",
        Some(other) => {
            return Err(ApiError::unprocessable(
                ErrorCode::InvalidValue,
                format!("unknown transaction type {other:?}"),
            ))
        }
        None if t.max_fee_per_gas.is_some() => "eip1559",
        None => "legacy",
    };
    Ok(if kind == "legacy" {
        let gp = t.gas_price.as_ref().ok_or_else(|| {
            ApiError::unprocessable(
                ErrorCode::InvalidValue,
                "gasPrice is required for a legacy transaction",
            )
        })?;
        Transaction::Legacy {
            chain_id,
            nonce,
            gas_price: uint128("gasPrice", gp)?,
            gas_limit,
            to,
            value,
            data,
        }
    } else {
        let need = |v: &Option<Value>, f: &str| {
            v.as_ref()
                .ok_or_else(|| {
                    ApiError::unprocessable(
                        ErrorCode::InvalidValue,
                        format!("{f} is required for an EIP-1559 transaction"),
                    )
                })
                .and_then(|v| uint128(f, v))
        };
        Transaction::Eip1559 {
            chain_id,
            nonce,
            max_priority_fee_per_gas: need(&t.max_priority_fee_per_gas, "maxPriorityFeePerGas")?,
            max_fee_per_gas: need(&t.max_fee_per_gas, "maxFeePerGas")?,
            gas_limit,
            to,
            value,
            data,
            access_list: Vec::new(),
        }
    })
}

/// The body of a `/Sign`.
pub async fn prepare_sign(state: &AppState, r: &SignRequest) -> Result<SignBody, ApiError> {
    // Validate the payload before touching the database.
    enum What {
        Msg(Vec<u8>),
        Tx(Transaction),
    }
    let what = match (&r.message, &r.transaction) {
        (Some(m), None) => {
            let m = message_bytes(m, r.message_encoding.as_deref())?;
            if m.len() > 64 * 1024 {
                return Err(ApiError::unprocessable(
                    ErrorCode::InvalidValue,
                    "Message exceeds 64 KiB",
                ));
            }
            What::Msg(m)
        }
        (None, Some(t)) => What::Tx(transaction(t)?),
        _ => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidRequest,
                "exactly one of Message or Transaction is required",
            ))
        }
    };
    let domain = match (&r.account, &what) {
        (None, _) => None,
        (Some(a), What::Msg(_)) => Some(account_domain(state, a)?),
        (Some(_), What::Tx(_)) => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidRequest,
                "Account applies to Message only (a transaction carries its own chainId)",
            ))
        }
    };
    let (wallet_id, path) = resolve_signer(
        state,
        r.key_id.as_deref(),
        r.address.as_deref(),
        r.derivation_path.as_deref(),
    )
    .await?;
    Ok(match (what, domain) {
        (What::Msg(message), None) => SignBody::Message(SignMessageBody {
            wallet_id,
            path,
            message,
        }),
        (What::Msg(message), Some((chain_id, account))) => {
            SignBody::ForAccount(SignForAccountBody {
                wallet_id,
                path,
                chain_id,
                account,
                content: AccountSignContent::Message(message),
            })
        }
        (What::Tx(transaction), _) => SignBody::Transaction(SignTransactionBody {
            wallet_id,
            path,
            transaction,
        }),
    })
}

/// The body of a `/DeriveAddress`.
pub async fn prepare_derive(
    state: &AppState,
    r: &DeriveAddressRequest,
) -> Result<DeriveAddressBody, ApiError> {
    let path = hd_path(&r.derivation_path)?;
    Ok(DeriveAddressBody {
        wallet_id: existing_wallet(state, &r.key_id).await?,
        path,
    })
}

/// The body of a `/GetPublicKey` with a path.
pub async fn prepare_get_public_key(
    state: &AppState,
    r: &GetPublicKeyRequest,
) -> Result<GetPublicKeyBody, ApiError> {
    let path = r
        .derivation_path
        .as_deref()
        .map(hd_path)
        .transpose()?
        .ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::InvalidRequest,
                "DerivationPath is required for a ceremony",
            )
        })?;
    Ok(GetPublicKeyBody {
        wallet_id: existing_wallet(state, &r.key_id).await?,
        path,
    })
}

/// The body of a `/DeleteKey`.
pub async fn prepare_delete(
    state: &AppState,
    r: &DeleteKeyRequest,
) -> Result<RemoveWalletBody, ApiError> {
    Ok(RemoveWalletBody {
        wallet_id: existing_wallet(state, &r.key_id).await?,
    })
}

/// The body of a `/ChangePasskey`, and the new passkey (its registration
/// ceremony is checked, not consumed).
pub async fn prepare_change_passkey(
    state: &AppState,
    r: &ChangePasskeyRequest,
) -> Result<(ChangePasskeyBody, Passkey), ApiError> {
    let wallet = existing_wallet(state, &r.key_id).await?;
    let Some(reg) = &r.new_passkey else {
        let why = if r.passkey_public_key.is_some() {
            "a bare PasskeyPublicKey is not accepted (no proof of possession)"
        } else {
            "NewPasskey is required"
        };
        return Err(ApiError::bad_request(
            ErrorCode::RegistrationRequired,
            format!(
                "{why}: register the new passkey with POST /BeginRegistration {{\"KeyId\": \
                 \"<wallet>\"}} and send {{ChallengeId, Credential}} as NewPasskey"
            ),
        ));
    };
    let wallet_str = wallet.to_uuid_string();
    let (passkey, _) = state
        .verify_registration(reg, Some(&wallet_str), CHANGE_PASSKEY_REGISTRATION, false)
        .await?;
    let body = ChangePasskeyBody {
        wallet_id: wallet,
        new_passkey_public_key: crate::webauthn::passkey_sec1(&passkey)?,
        new_rp_id: state.config.rp_id.clone(),
    };
    Ok((body, passkey))
}

/// The mint body of a `/kms/create-agent-key`.
pub async fn prepare_mint(
    state: &AppState,
    r: &CreateAgentKeyRequest,
) -> Result<MintAgentBody, ApiError> {
    let label = r.label.clone().unwrap_or_default();
    if label.len() > 128 {
        return Err(ApiError::unprocessable(
            ErrorCode::InvalidLabel,
            "label exceeds 128 bytes",
        ));
    }
    let ttl_secs = ttl(state, r.ttl_secs)?;
    Ok(MintAgentBody {
        wallet_id: existing_wallet(state, &r.human_key_id).await?,
        label,
        ttl_secs,
    })
}

/// The refresh body of a `/kms/refresh-agent-credential`.
pub async fn prepare_refresh(
    state: &AppState,
    r: &RefreshAgentRequest,
) -> Result<RefreshAgentBody, ApiError> {
    let (wallet_id, agent_index) = agent_key_id(&r.key_id)?;
    let ttl_secs = ttl(state, r.ttl_secs)?;
    existing_agent(state, &wallet_id, agent_index).await?;
    Ok(RefreshAgentBody {
        wallet_id,
        agent_index,
        ttl_secs,
    })
}

/// The revoke request of a `/kms/revoke-agent-credential`.
pub async fn prepare_revoke(
    state: &AppState,
    r: &RevokeAgentRequest,
) -> Result<RevokeAgentKey, ApiError> {
    let (wallet_id, agent_index) = agent_key_id(&r.key_id)?;
    existing_agent(state, &wallet_id, agent_index).await?;
    Ok(RevokeAgentKey {
        wallet_id,
        agent_index,
    })
}

/// The digest a revoke ceremony commits to (the TA needs no passkey to
/// revoke; the host verifies the ceremony over this digest).
pub fn revoke_digest(r: &RevokeAgentKey) -> [u8; 32] {
    authz::payload_digest(CommandId::RevokeAgentKey, r)
}

async fn existing_agent(
    state: &AppState,
    wallet: &WalletId,
    index: u32,
) -> Result<kms_db::AgentKey, ApiError> {
    state
        .db
        .get_agent(&wallet.to_uuid_string(), index)
        .await?
        .filter(|a| {
            matches!(
                a.status,
                kms_db::AgentStatus::Active | kms_db::AgentStatus::Revoked
            )
        })
        .ok_or_else(|| ApiError::not_found(ErrorCode::AgentNotFound, "unknown agent key"))
}

// ---------------------------------------------------- BeginAuthentication

fn with_key(payload: Option<Value>, field: &str, key: Option<&str>) -> Result<Value, ApiError> {
    let mut map = match payload {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidRequest,
                "Payload must be a JSON object",
            ))
        }
    };
    if let Some(k) = key {
        match map.get(field) {
            Some(Value::String(existing)) if existing != k => {
                return Err(ApiError::bad_request(
                    ErrorCode::InvalidRequest,
                    format!("Payload.{field} differs from KeyId"),
                ))
            }
            _ => {
                map.insert(field.to_owned(), Value::String(k.to_owned()));
            }
        }
    }
    Ok(Value::Object(map))
}

/// The wallet and payload digest a `/BeginAuthentication` request
/// authorises: the payload is parsed into the operation's own request type
/// (with KeyId/Address inserted) and built by the operation's own builder.
pub async fn ceremony_target(
    state: &AppState,
    purpose: Purpose,
    key_id: Option<&str>,
    address: Option<&str>,
    payload: Option<Value>,
) -> Result<(WalletId, [u8; 32]), ApiError> {
    let aws = |payload: Option<Value>| -> Result<Value, ApiError> {
        let v = with_key(payload, "KeyId", key_id)?;
        if key_id.is_none() {
            return with_key(Some(v), "Address", address);
        }
        Ok(v)
    };
    Ok(match purpose {
        Purpose::SignHash => {
            let b = prepare_sign_hash(state, &from_value(aws(payload)?)?).await?;
            (b.wallet(), b.digest())
        }
        Purpose::Sign => {
            let b = prepare_sign(state, &from_value(aws(payload)?)?).await?;
            (b.wallet(), b.digest())
        }
        Purpose::DeriveAddress => {
            let b = prepare_derive(state, &from_value(aws(payload)?)?).await?;
            (b.wallet_id, b.payload_digest())
        }
        Purpose::GetPublicKey => {
            let b = prepare_get_public_key(state, &from_value(aws(payload)?)?).await?;
            (b.wallet_id, b.payload_digest())
        }
        Purpose::DeleteKey => {
            let b = prepare_delete(state, &from_value(aws(payload)?)?).await?;
            (b.wallet_id, b.payload_digest())
        }
        Purpose::ChangePasskey => {
            let (b, _) = prepare_change_passkey(state, &from_value(aws(payload)?)?).await?;
            (b.wallet_id, b.payload_digest())
        }
        Purpose::CreateAgentKey => {
            let v = with_key(payload, "humanKeyId", key_id)?;
            let b = prepare_mint(state, &from_value(v)?).await?;
            (b.wallet_id, b.payload_digest())
        }
        Purpose::RefreshAgentCredential => {
            let v = with_key(payload, "keyId", key_id)?;
            let b = prepare_refresh(state, &from_value(v)?).await?;
            (b.wallet_id, b.payload_digest())
        }
        Purpose::RevokeAgentCredential => {
            let v = with_key(payload, "keyId", key_id)?;
            let r = prepare_revoke(state, &from_value(v)?).await?;
            (r.wallet_id, revoke_digest(&r))
        }
        Purpose::GrantSession => {
            // Built (with its UserOperation) by service::sessions::begin_grant.
            return Err(ApiError::internal(
                "GrantSession ceremonies are started by begin_grant",
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn agent_key_ids() {
        let w = "12345678-9abc-4def-8011-223344556677";
        assert_eq!(agent_key_id(&format!("{w}:7")).unwrap().1, 7);
        for bad in [
            w.to_string(),
            format!("{w}:"),
            format!("{w}:-1"),
            format!("{w}:2147483648"),
            format!("x:{}", 1),
        ] {
            assert_eq!(agent_key_id(&bad).unwrap_err().status(), 400, "{bad}");
        }
    }

    #[test]
    fn transactions() {
        let t: TransactionRequest = serde_json::from_value(json!({
            "chainId": 1, "nonce": "0x1", "to": "0x0000000000000000000000000000000000000001",
            "value": "1000", "gasPrice": "20000000000", "gas": 21000
        }))
        .unwrap();
        assert!(matches!(
            transaction(&t).unwrap(),
            Transaction::Legacy { .. }
        ));
        let mut short = t.clone();
        short.to = Some("0x00000000000000000000000000000000000001".into());
        assert_eq!(transaction(&short).unwrap_err().code(), "invalid_recipient");
        let mut badhex = t.clone();
        badhex.to = Some("0xzz".into());
        assert_eq!(transaction(&badhex).unwrap_err().status(), 400);
        let e: TransactionRequest = serde_json::from_value(json!({
            "chainId": 1, "nonce": 0, "gasLimit": 21000, "maxFeePerGas": 2, "maxPriorityFeePerGas": 1
        }))
        .unwrap();
        assert!(matches!(
            transaction(&e).unwrap(),
            Transaction::Eip1559 { to: None, .. }
        ));
    }

    #[test]
    fn payload_key_injection() {
        let v = with_key(Some(json!({"Hash": "0x"})), "KeyId", Some("k")).unwrap();
        assert_eq!(v["KeyId"], "k");
        assert!(with_key(Some(json!({"KeyId": "other"})), "KeyId", Some("k")).is_err());
        assert!(with_key(Some(json!([1])), "KeyId", Some("k")).is_err());
    }
}
