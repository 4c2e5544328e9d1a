//! The AWS-KMS-style wallet API (`x-amz-target: TrentService.<Op>`).
//! Every operation that uses or changes a key finishes a WebAuthn ceremony
//! bound to its exact TA payload; the TA verifies the assertion again.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::{Extension, Json};
use kms_db::WalletAddress;
use kms_proto::authz::AuthorizedBody;
use kms_proto::{AccountSignContent, ChangePasskey, DeriveAddress, GetPublicKey, RemoveWallet};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit::{AuditMode, Audited};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::extract::{checksum, hex0x, JsonBody};
use crate::ops::{
    self, ChangePasskeyRequest, DeleteKeyRequest, DeriveAddressRequest, GetPublicKeyRequest,
    SignBody, SignHashRequest, SignRequest, CHANGE_PASSKEY_REGISTRATION,
};
use crate::routes::ceremony::CompleteRegistrationRequest;
use crate::routes::check_target;
use crate::service::wallets::passkey_counter;
use crate::service::wallets::{Signed, Wallets};
use crate::state::AppState;
use crate::webauthn::{passkey_credential_id, Purpose};

/// AWS-style key metadata (real values only).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct KeyMetadata {
    /// Wallet id.
    pub key_id: String,
    /// `arn:aws:kms:local:000000000000:key/<id>`-style name.
    pub arn: String,
    /// Created (unix seconds).
    pub creation_date: i64,
    /// Always true for an existing key (deletion is immediate).
    pub enabled: bool,
    /// Description.
    pub description: String,
    /// Key usage.
    pub key_usage: String,
    /// Key spec.
    pub key_spec: String,
    /// Key origin.
    pub origin: String,
    /// `Enabled`.
    pub key_state: String,
    /// Owner address.
    pub address: String,
    /// Owner public key (SEC1 compressed, 0x hex).
    pub public_key: String,
    /// Owner path.
    pub derivation_path: String,
    /// Relying party id the passkey is bound to.
    pub rp_id: String,
    /// Passkey credential id (base64url).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passkey_credential_id: Option<String>,
}

/// Key metadata of a wallet row.
pub fn key_metadata(w: &kms_db::Wallet, credential_id: Option<String>) -> KeyMetadata {
    KeyMetadata {
        key_id: w.key_id.clone(),
        arn: format!("arn:aws:kms:local:000000000000:key/{}", w.key_id),
        creation_date: w.created_at,
        enabled: true,
        description: w.description.clone(),
        key_usage: w.key_usage.clone(),
        key_spec: w.key_spec.clone(),
        origin: w.origin.clone(),
        key_state: "Enabled".into(),
        address: w.address.to_checksum(None),
        public_key: w.public_key.clone(),
        derivation_path: w.derivation_path.clone(),
        rp_id: w.rp_id.clone(),
        passkey_credential_id: credential_id,
    }
}

/// `/CreateKey` answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct CreateKeyResponse {
    /// The new key.
    pub key_metadata: KeyMetadata,
}

/// `/DescribeKey`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DescribeKeyRequest {
    /// Wallet id.
    pub key_id: String,
}

/// `/DescribeKey` answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeKeyResponse {
    /// The key.
    pub key_metadata: KeyMetadata,
    /// Addresses recorded for it (owner and DeriveAddress results).
    pub addresses: Vec<AddressEntry>,
}

/// A recorded address.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct AddressEntry {
    /// Address.
    pub address: String,
    /// Path.
    pub derivation_path: String,
    /// Public key.
    pub public_key: String,
}

/// `/ListKeys`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ListKeysRequest {
    /// Page size, 1..=1000 [default: 100].
    #[serde(default)]
    pub limit: Option<u32>,
    /// `NextMarker` of the previous page.
    #[serde(default)]
    pub marker: Option<String>,
}

/// One listed key.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ListedKey {
    /// Wallet id.
    pub key_id: String,
    /// ARN-style name.
    pub key_arn: String,
}

/// `/ListKeys` answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeysResponse {
    /// This page.
    pub keys: Vec<ListedKey>,
    /// Whether more keys follow.
    pub truncated: bool,
    /// Marker for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

/// An address and public key answer (`/GetPublicKey`, `/DeriveAddress`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct PublicKeyResponse {
    /// Wallet id.
    pub key_id: String,
    /// Address at the path.
    pub address: String,
    /// SEC1 compressed secp256k1 key, 0x hex.
    pub public_key: String,
    /// Path.
    pub derivation_path: String,
    /// Key usage.
    pub key_usage: String,
    /// Key spec.
    pub key_spec: String,
}

/// `/SignHash` and `/Sign` answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct SignResponse {
    /// Wallet id.
    pub key_id: String,
    /// Signer address (the key at the path; for `Account`, the account's owner must be it).
    pub address: String,
    /// `r ‖ s ‖ v` (65 bytes, v = 27/28), hex without 0x (upstream shape).
    pub signature: String,
    /// Always `ECDSA_SECP256K1`.
    pub signing_algorithm: String,
    /// What `Signature` is:
    /// `EIP191PersonalSign` (`/Sign` message: the key's personal_sign, an EOA signature),
    /// `ERC7739PersonalSign` (with `Account`: for that account's ERC-1271 `isValidSignature`
    /// on `ChainId` only), `RawDigest` (`/SignHash`: ECDSA over `Hash` as given),
    /// `Transaction`.
    pub signature_format: String,
    /// `ERC7739PersonalSign` only: the smart account the signature is bound to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// `ERC7739PersonalSign` only: the chain id bound into the signature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<u64>,
    /// `ERC7739PersonalSign` only: the `hash` for which `Account.isValidSignature(hash,
    /// Signature)` returns `0x1626ba7e` (the EIP-191 hash of `Message`, or `Hash`), 0x hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_valid_signature_hash: Option<String>,
    /// Transactions: the signed raw transaction, 0x hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_transaction: Option<String>,
    /// Transactions: the transaction hash, 0x hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_hash: Option<String>,
}

/// `/DeleteKey` answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteKeyResponse {
    /// Wallet id.
    pub key_id: String,
    /// When it was deleted (immediately; unix seconds).
    pub deletion_date: i64,
    /// `Deleted`.
    pub key_state: String,
}

/// `/ChangePasskey` answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ChangePasskeyResponse {
    /// Wallet id.
    pub key_id: String,
    /// The new passkey's credential id (base64url).
    pub credential_id: String,
    /// Always true.
    pub changed: bool,
}

/// AWS `CreateKey`: only over a registration ceremony (proof of possession
/// of the passkey); a bare `PasskeyPublicKey` is refused.
#[utoipa::path(post, path = "/CreateKey", tag = "wallet",
    request_body = CompleteRegistrationRequest,
    responses((status = 200, body = CreateKeyResponse), (status = 400, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn create_key(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    JsonBody(r): JsonBody<CompleteRegistrationRequest>,
) -> Result<Json<CreateKeyResponse>, ApiError> {
    check_target(&headers, &["CreateKey"], false)?;
    let res = Wallets(&s).register(&caller, &r).await;
    let key = res.as_ref().ok().map(|(w, _)| w.key_id.clone());
    let audit = Audited::new(&caller.actor, "CreateKey").key_id(key.as_deref());
    let (w, credential_id) = s.audited(audit, AuditMode::Durable, res).await?;
    Ok(Json(CreateKeyResponse {
        key_metadata: key_metadata(&w, Some(credential_id)),
    }))
}

/// Describe a key (database only; public facts).
#[utoipa::path(post, path = "/DescribeKey", tag = "wallet", request_body = DescribeKeyRequest,
    params(("x-amz-target" = String, Header, description = "TrentService.DescribeKey")),
    responses((status = 200, body = DescribeKeyResponse), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn describe_key(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    JsonBody(r): JsonBody<DescribeKeyRequest>,
) -> Result<Json<DescribeKeyResponse>, ApiError> {
    check_target(&headers, &["DescribeKey"], false)?;
    let id = ops::wallet_id(&r.key_id)?.to_uuid_string();
    let w =
        s.db.get_wallet(&id)
            .await?
            .ok_or_else(|| ApiError::not_found(ErrorCode::KeyNotFound, "key not found"))?;
    let cred = s.db.get_passkey(&id).await?.map(|p| p.credential_id);
    let addresses =
        s.db.wallet_addresses(&id)
            .await?
            .into_iter()
            .map(|a| AddressEntry {
                address: a.address.to_checksum(None),
                derivation_path: a.derivation_path,
                public_key: a.public_key,
            })
            .collect();
    Ok(Json(DescribeKeyResponse {
        key_metadata: key_metadata(&w, cred),
        addresses,
    }))
}

/// List keys, paged.
#[utoipa::path(post, path = "/ListKeys", tag = "wallet", request_body = ListKeysRequest,
    params(("x-amz-target" = String, Header, description = "TrentService.ListKeys")),
    responses((status = 200, body = ListKeysResponse)), security(("api_key" = [])))]
pub async fn list_keys(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    JsonBody(r): JsonBody<ListKeysRequest>,
) -> Result<Json<ListKeysResponse>, ApiError> {
    check_target(&headers, &["ListKeys"], false)?;
    let limit = r.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::unprocessable(
            ErrorCode::InvalidValue,
            "Limit must be between 1 and 1000",
        ));
    }
    let mut rows = s.db.list_wallets(limit + 1, r.marker.as_deref()).await?;
    let truncated = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_marker = if truncated {
        rows.last().map(|w| w.key_id.clone())
    } else {
        None
    };
    let keys = rows
        .into_iter()
        .map(|w| ListedKey {
            key_arn: format!("arn:aws:kms:local:000000000000:key/{}", w.key_id),
            key_id: w.key_id,
        })
        .collect();
    Ok(Json(ListKeysResponse {
        keys,
        truncated,
        next_marker,
    }))
}

/// The owner key (recorded at registration), or the key at a path derived
/// in the TA under a ceremony.
#[utoipa::path(post, path = "/GetPublicKey", tag = "wallet", request_body = GetPublicKeyRequest,
    params(("x-amz-target" = String, Header, description = "TrentService.GetPublicKey")),
    responses((status = 200, body = PublicKeyResponse), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn get_public_key(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    JsonBody(r): JsonBody<GetPublicKeyRequest>,
) -> Result<Json<PublicKeyResponse>, ApiError> {
    check_target(&headers, &["GetPublicKey"], false)?;
    if r.derivation_path.is_none() {
        let id = ops::wallet_id(&r.key_id)?.to_uuid_string();
        let w =
            s.db.get_wallet(&id)
                .await?
                .ok_or_else(|| ApiError::not_found(ErrorCode::KeyNotFound, "key not found"))?;
        return Ok(Json(PublicKeyResponse {
            key_id: w.key_id,
            address: w.address.to_checksum(None),
            public_key: w.public_key,
            derivation_path: w.derivation_path,
            key_usage: w.key_usage,
            key_spec: w.key_spec,
        }));
    }
    let body = ops::prepare_get_public_key(&s, &r).await?;
    let key = body.wallet_id.to_uuid_string();
    let res = async {
        let assertion = s
            .finish_authentication(
                &body.wallet_id,
                Purpose::GetPublicKey,
                &body.payload_digest(),
                &r,
                "wallet id",
            )
            .await?;
        s.tee
            .call(&GetPublicKey {
                body: body.clone(),
                assertion,
            })
            .await
    }
    .await;
    let path = body.path.to_string();
    let audit = Audited::new(&caller.actor, "GetPublicKey")
        .key_id(key.as_str())
        .detail(path.as_str());
    let info = s.audited(audit, AuditMode::Durable, res).await?;
    let w =
        s.db.get_wallet(&key)
            .await?
            .ok_or_else(|| ApiError::not_found(ErrorCode::KeyNotFound, "key not found"))?;
    Ok(Json(PublicKeyResponse {
        key_id: key,
        address: checksum(&info.address),
        public_key: hex0x(&info.public_key),
        derivation_path: info.path.to_string(),
        key_usage: w.key_usage,
        key_spec: w.key_spec,
    }))
}

/// Derive the address at a path (TA, under a ceremony) and record it.
#[utoipa::path(post, path = "/DeriveAddress", tag = "wallet", request_body = DeriveAddressRequest,
    params(("x-amz-target" = String, Header, description = "TrentService.DeriveAddress")),
    responses((status = 200, body = PublicKeyResponse), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn derive_address(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    JsonBody(r): JsonBody<DeriveAddressRequest>,
) -> Result<Json<PublicKeyResponse>, ApiError> {
    check_target(&headers, &["DeriveAddress"], false)?;
    let body = ops::prepare_derive(&s, &r).await?;
    let key = body.wallet_id.to_uuid_string();
    let res = async {
        let assertion = s
            .finish_authentication(
                &body.wallet_id,
                Purpose::DeriveAddress,
                &body.payload_digest(),
                &r,
                "wallet id",
            )
            .await?;
        s.tee
            .call(&DeriveAddress {
                body: body.clone(),
                assertion,
            })
            .await
    }
    .await;
    let path = body.path.to_string();
    let audit = Audited::new(&caller.actor, "DeriveAddress")
        .key_id(key.as_str())
        .detail(path.as_str());
    let info = s.audited(audit, AuditMode::Durable, res).await?;
    s.db.upsert_address(&WalletAddress {
        address: alloy::primitives::Address::from(info.address),
        wallet_id: key.clone(),
        derivation_path: info.path.to_string(),
        public_key: hex0x(&info.public_key),
        created_at: kms_db::now_secs(),
    })
    .await?;
    let w =
        s.db.get_wallet(&key)
            .await?
            .ok_or_else(|| ApiError::not_found(ErrorCode::KeyNotFound, "key not found"))?;
    Ok(Json(PublicKeyResponse {
        key_id: key,
        address: checksum(&info.address),
        public_key: hex0x(&info.public_key),
        derivation_path: info.path.to_string(),
        key_usage: w.key_usage,
        key_spec: w.key_spec,
    }))
}

/// The answer for `body` and what the TA produced.
fn sign_response(key_id: String, body: &SignBody, signed: Signed) -> SignResponse {
    let (account, chain_id, is_valid_signature_hash) = match body {
        SignBody::ForAccount(b) => {
            let hash = match &b.content {
                AccountSignContent::Message(m) => alloy::primitives::eip191_hash_message(m).0,
                AccountSignContent::Hash(h) => *h,
            };
            (
                Some(checksum(&b.account)),
                Some(b.chain_id),
                Some(hex0x(&hash)),
            )
        }
        _ => (None, None, None),
    };
    SignResponse {
        key_id,
        address: checksum(&signed.address),
        signature: hex::encode(&signed.signature),
        signing_algorithm: "ECDSA_SECP256K1".into(),
        signature_format: body.format().into(),
        account,
        chain_id,
        is_valid_signature_hash,
        signed_transaction: signed.transaction.as_ref().map(|(raw, _)| hex0x(raw)),
        transaction_hash: signed.transaction.as_ref().map(|(_, h)| hex0x(h)),
    }
}

/// The audit action and detail of a `/Sign` or `/SignHash` body.
fn audit_of(body: &SignBody) -> (&'static str, Option<String>) {
    match body {
        SignBody::Message(_) => ("SignMessage", None),
        SignBody::Transaction(_) => ("SignTransaction", None),
        SignBody::Hash(b) => ("SignHash", Some(hex0x(&b.hash))),
        SignBody::ForAccount(b) => (
            "SignForAccount",
            Some(format!(
                "account {} chain {}",
                hex0x(&b.account),
                b.chain_id
            )),
        ),
    }
}

/// Sign a 32-byte digest: raw ECDSA over `Hash` as given, or, with `Account`, its ERC-7739
/// wrapping for that smart account.
///
/// Without `Account` (`SignatureFormat` `RawDigest`): `r ‖ s ‖ v` over `Hash` itself, no
/// prefix, by the key at the path. A raw digest can be anything: a transaction's signing hash,
/// an EIP-712 digest, or the userOpHash of an operation of the owner's own `AgentAccount`,
/// which the account accepts as the owner's UserOperation signature (it can move the
/// account's funds). Only sign digests you computed yourself from data you checked.
///
/// With `Account` (`SignatureFormat` `ERC7739PersonalSign`, needs the companion's chain
/// settings, else 503 `chain_not_configured`): the TA signs
/// `keccak256(0x1901 ‖ domainSeparator ‖ keccak256(abi.encode(keccak256("PersonalSign(bytes
/// prefixed)"), Hash)))`, where `domainSeparator` is the account's EIP-712 domain (`name`
/// "AgentAccount", `version` "1", the companion's chain id, `verifyingContract` = `Account`):
/// the ERC-7739 signature the account's ERC-1271 `isValidSignature(Hash, Signature)` accepts.
/// It is valid for that account on that chain only, and is never a UserOperation signature.
///
/// The ceremony (`Purpose` `SignHash`, `Payload` = this request without `KeyId`/`WebAuthn`)
/// commits to the exact body, `Account` and chain id included.
#[utoipa::path(post, path = "/SignHash", tag = "wallet", request_body = SignHashRequest,
    params(("x-amz-target" = String, Header, description = "TrentService.SignHash")),
    responses((status = 200, body = SignResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, description = "`Account` given and the companion has no chain settings (`chain_not_configured`), or the signature withheld because its audit event could not be committed (`audit_unavailable`)", body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn sign_hash(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    JsonBody(r): JsonBody<SignHashRequest>,
) -> Result<Json<SignResponse>, ApiError> {
    check_target(&headers, &["SignHash"], false)?;
    let body = ops::prepare_sign_hash(&s, &r).await?;
    let wallet = body.wallet();
    let key = wallet.to_uuid_string();
    let res = async {
        let assertion = s
            .finish_authentication(&wallet, Purpose::SignHash, &body.digest(), &r, "wallet id")
            .await?;
        Wallets(&s).sign(body.clone(), assertion).await
    }
    .await;
    let (action, detail) = audit_of(&body);
    let audit = Audited::new(&caller.actor, action)
        .key_id(key.as_str())
        .detail(detail.as_deref());
    let signed = s.audited(audit, AuditMode::ReleaseCommitted, res).await?;
    s.metrics.count_signature("hash");
    Ok(Json(sign_response(key, &body, signed)))
}

/// Sign a personal message or a transaction (`to` exactly 20 bytes).
///
/// `Message` without `Account` (`SignatureFormat` `EIP191PersonalSign`): the EIP-191
/// `personal_sign` of the message by the key at the path, `r ‖ s ‖ v` over
/// `keccak256("\x19Ethereum Signed Message:\n" ‖ len ‖ message)`: an EOA signature, as
/// `ecrecover`-based verifiers expect. It is NOT valid as the owner's `AgentAccount`'s ERC-1271
/// signature (the account verifies ERC-7739, see `Account`), and NOT as its UserOperation
/// signature (the account takes the owner's raw signature over the userOpHash, which this
/// route never makes, even for a 32-byte message).
///
/// `Message` with `Account` (`SignatureFormat` `ERC7739PersonalSign`, needs the companion's
/// chain settings, else 503 `chain_not_configured`): the ERC-7739 `PersonalSign` signature for
/// that smart account on the companion's chain, over `keccak256(0x1901 ‖ domainSeparator ‖
/// keccak256(abi.encode(keccak256("PersonalSign(bytes prefixed)"), eip191Hash(Message))))`
/// with the account's EIP-712 domain (`name` "AgentAccount", `version` "1", the chain id,
/// `verifyingContract` = `Account`): what the account's `isValidSignature(eip191Hash(Message),
/// Signature)` accepts (answer field `IsValidSignatureHash`), for that account and chain only.
///
/// `Transaction` (`SignatureFormat` `Transaction`): the signed raw transaction for its own
/// `chainId`; `Account` is refused with it.
///
/// The ceremony (`Purpose` `Sign`, `Payload` = this request without `KeyId`/`WebAuthn`)
/// commits to the exact body, `Account` and chain id included.
#[utoipa::path(post, path = "/Sign", tag = "wallet", request_body = SignRequest,
    params(("x-amz-target" = String, Header, description = "TrentService.Sign")),
    responses((status = 200, body = SignResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, description = "`Account` given and the companion has no chain settings (`chain_not_configured`), or the signature withheld because its audit event could not be committed (`audit_unavailable`)", body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn sign(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    JsonBody(r): JsonBody<SignRequest>,
) -> Result<Json<SignResponse>, ApiError> {
    check_target(&headers, &["Sign"], false)?;
    let body = ops::prepare_sign(&s, &r).await?;
    let wallet = body.wallet();
    let key = wallet.to_uuid_string();
    let res = async {
        let assertion = s
            .finish_authentication(&wallet, Purpose::Sign, &body.digest(), &r, "wallet id")
            .await?;
        Wallets(&s).sign(body.clone(), assertion).await
    }
    .await;
    let (action, detail) = audit_of(&body);
    let audit = Audited::new(&caller.actor, action)
        .key_id(key.as_str())
        .detail(detail.as_deref());
    let signed = s.audited(audit, AuditMode::ReleaseCommitted, res).await?;
    s.metrics.count_signature(if signed.transaction.is_some() {
        "transaction"
    } else {
        "message"
    });
    Ok(Json(sign_response(key, &body, signed)))
}

/// Delete a wallet (immediately) in the TA and the database.
#[utoipa::path(post, path = "/DeleteKey", tag = "wallet", request_body = DeleteKeyRequest,
    params(("x-amz-target" = String, Header, description = "TrentService.DeleteKey or TrentService.ScheduleKeyDeletion")),
    responses((status = 200, body = DeleteKeyResponse), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn delete_key(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    JsonBody(r): JsonBody<DeleteKeyRequest>,
) -> Result<Json<DeleteKeyResponse>, ApiError> {
    check_target(&headers, &["DeleteKey", "ScheduleKeyDeletion"], false)?;
    let body = ops::prepare_delete(&s, &r).await?;
    let key = body.wallet_id.to_uuid_string();
    let res = async {
        let assertion = s
            .finish_authentication(
                &body.wallet_id,
                Purpose::DeleteKey,
                &body.payload_digest(),
                &r,
                "wallet id",
            )
            .await?;
        s.tee
            .call(&RemoveWallet {
                body: body.clone(),
                assertion,
            })
            .await?;
        s.db.delete_wallet(&key).await?;
        s.credentials.invalidate_wallet(&key);
        Ok::<_, ApiError>(())
    }
    .await;
    let audit = Audited::new(&caller.actor, "DeleteKey").key_id(key.as_str());
    s.audited(audit, AuditMode::Durable, res).await?;
    Ok(Json(DeleteKeyResponse {
        key_id: key,
        deletion_date: kms_db::now_secs(),
        key_state: "Deleted".into(),
    }))
}

/// Replace the wallet's passkey: the new one proves possession in a
/// registration ceremony (`NewPasskey`), the current one authorises the
/// change with an assertion bound to it (`WebAuthn`).
#[utoipa::path(post, path = "/ChangePasskey", tag = "wallet", request_body = ChangePasskeyRequest,
    responses((status = 200, body = ChangePasskeyResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn change_passkey(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    JsonBody(r): JsonBody<ChangePasskeyRequest>,
) -> Result<Json<ChangePasskeyResponse>, ApiError> {
    check_target(&headers, &["ChangePasskey"], true)?;
    let (body, _) = ops::prepare_change_passkey(&s, &r).await?;
    let key = body.wallet_id.to_uuid_string();
    let res = async {
        let assertion = s
            .finish_authentication(
                &body.wallet_id,
                Purpose::ChangePasskey,
                &body.payload_digest(),
                &r,
                "wallet id",
            )
            .await?;
        // Consume the new passkey's registration ceremony (single use).
        let reg = r
            .new_passkey
            .as_ref()
            .ok_or_else(|| ApiError::internal("checked above"))?;
        let (passkey, _) = s
            .verify_registration(reg, Some(&key), CHANGE_PASSKEY_REGISTRATION, true)
            .await?;
        if crate::webauthn::passkey_sec1(&passkey)? != body.new_passkey_public_key {
            return Err(ApiError::forbidden(
                ErrorCode::PayloadMismatch,
                "the new passkey changed during the ceremony",
            ));
        }
        s.tee
            .call(&ChangePasskey {
                body: body.clone(),
                assertion,
            })
            .await?;
        let credential_id = passkey_credential_id(&passkey);
        let json =
            serde_json::to_string(&passkey).map_err(|e| ApiError::internal(e.to_string()))?;
        s.db.replace_passkey(
            &key,
            &credential_id,
            &hex::encode(&body.new_passkey_public_key),
            &json,
            i64::from(passkey_counter(&passkey)),
            &body.new_rp_id,
            kms_db::now_secs(),
        )
        .await?;
        Ok(credential_id)
    }
    .await;
    let audit = Audited::new(&caller.actor, "ChangePasskey").key_id(key.as_str());
    let credential_id = s.audited(audit, AuditMode::Durable, res).await?;
    Ok(Json(ChangePasskeyResponse {
        key_id: key,
        credential_id,
        changed: true,
    }))
}
