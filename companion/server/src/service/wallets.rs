//! Wallets: registered over a WebAuthn registration ceremony ([`Wallets::register`]: the TA
//! creates the wallet bound to the attested passkey and the configured rpId), and the TA's
//! signatures with a wallet's keys ([`Wallets::sign`], authorised by the owner's passkey).

use kms_db::NewWallet;
use kms_proto::{
    CreateWallet, PasskeyAssertion, SignForAccount, SignHash, SignMessage, SignTransaction,
};
use serde_json::Value;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::extract::hex0x;
use crate::ops::{SignBody, NEW_WALLET_REGISTRATION};
use crate::routes::ceremony::CompleteRegistrationRequest;
use crate::state::AppState;
use crate::webauthn::{passkey_credential_id, passkey_sec1, CeremonyResponse};

/// What the TA produced for a signing body.
#[derive(Debug)]
pub struct Signed {
    /// The signer's address.
    pub address: [u8; 20],
    /// `r ‖ s ‖ v`.
    pub signature: Vec<u8>,
    /// For a transaction: the signed raw transaction and its hash.
    pub transaction: Option<(Vec<u8>, [u8; 32])>,
}

/// The wallets of one companion.
#[derive(Clone, Copy)]
pub struct Wallets<'a>(pub &'a AppState);

impl Wallets<'_> {
    /// Registers a wallet over the registration ceremony of `r` (proof of possession of the
    /// passkey; a bare public key is refused): the TA creates the wallet bound to the passkey
    /// and the configured rpId, the database records it. Returns it and the passkey's
    /// credential id.
    pub async fn register(
        &self,
        caller: &Caller,
        r: &CompleteRegistrationRequest,
    ) -> Result<(kms_db::Wallet, String), ApiError> {
        let s = self.0;
        let (Some(challenge_id), Some(credential)) = (&r.challenge_id, &r.credential) else {
            let why = if r.passkey_public_key.is_some() {
                "a bare PasskeyPublicKey is not accepted: the passkey must prove possession in a \
                 registration ceremony"
            } else {
                "ChallengeId and Credential are required"
            };
            return Err(ApiError::bad_request(
                ErrorCode::RegistrationRequired,
                format!("{why}: POST /BeginRegistration, create the credential, then send {{ChallengeId, Credential}}"),
            ));
        };
        let ceremony = CeremonyResponse {
            challenge_id: challenge_id.clone(),
            credential: credential.clone(),
        };
        let (passkey, meta) = s
            .verify_registration(&ceremony, None, NEW_WALLET_REGISTRATION, true)
            .await?;
        let meta = meta.unwrap_or(Value::Null);
        let pick = |over: &Option<String>, key: &str, default: &str| {
            over.clone()
                .or_else(|| meta.get(key).and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| default.to_owned())
        };
        let sec1 = passkey_sec1(&passkey)?;
        let created = s
            .tee
            .call(&CreateWallet {
                passkey_public_key: sec1.clone(),
                rp_id: s.config.rp_id.clone(),
            })
            .await?;
        let key_id = created.wallet_id.to_uuid_string();
        let credential_id = passkey_credential_id(&passkey);
        let now = kms_db::now_secs();
        let new = NewWallet {
            key_id: key_id.clone(),
            description: pick(&r.description, "Description", ""),
            key_usage: pick(&r.key_usage, "KeyUsage", "SIGN_VERIFY"),
            key_spec: pick(&r.key_spec, "KeySpec", "ECC_SECG_P256K1"),
            origin: pick(&r.origin, "Origin", "EXTERNAL_KMS"),
            address: created.owner.address.into(),
            public_key: hex0x(&created.owner.public_key),
            derivation_path: created.owner.path.to_string(),
            rp_id: s.config.rp_id.clone(),
            credential_id: credential_id.clone(),
            passkey_public_key: hex::encode(&sec1),
            passkey_json: serde_json::to_string(&passkey)
                .map_err(|e| ApiError::internal(e.to_string()))?,
            sign_count: i64::from(passkey_counter(&passkey)),
            ta_id: crate::replicas::this_ta_now(s).await,
            now,
        };
        if let Err(e) = s.db.insert_wallet(&new).await {
            tracing::error!(wallet = %key_id, error = %e, "wallet created in the TA but not recorded");
            return Err(e.into());
        }
        tracing::info!(wallet = %key_id, actor = %caller.actor, "wallet registered");
        let w =
            s.db.get_wallet(&key_id)
                .await?
                .ok_or_else(|| ApiError::internal("wallet vanished"))?;
        Ok((w, credential_id))
    }

    /// Has the TA sign `body`, authorised by `assertion`.
    pub async fn sign(
        &self,
        body: SignBody,
        assertion: PasskeyAssertion,
    ) -> Result<Signed, ApiError> {
        let s = self.0;
        let plain = |sig: kms_proto::Signature65| Signed {
            address: sig.address,
            signature: sig.bytes,
            transaction: None,
        };
        Ok(match body {
            SignBody::Message(b) => plain(s.tee.call(&SignMessage { body: b, assertion }).await?),
            SignBody::Hash(b) => plain(s.tee.call(&SignHash { body: b, assertion }).await?),
            SignBody::ForAccount(b) => {
                plain(s.tee.call(&SignForAccount { body: b, assertion }).await?)
            }
            SignBody::Transaction(b) => {
                let tx = s.tee.call(&SignTransaction { body: b, assertion }).await?;
                Signed {
                    address: tx.from,
                    signature: tx.signature,
                    transaction: Some((tx.raw, tx.tx_hash)),
                }
            }
        })
    }
}

/// The signature counter a passkey was registered with.
pub fn passkey_counter(p: &webauthn_rs::prelude::Passkey) -> u32 {
    serde_json::to_value(p)
        .ok()
        .and_then(|v| v.get("cred")?.get("counter")?.as_u64())
        .and_then(|c| u32::try_from(c).ok())
        .unwrap_or(0)
}
