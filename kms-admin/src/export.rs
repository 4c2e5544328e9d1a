//! The passkey-gated private key export behind the development-only `export_key` binary
//! (feature `export-secrets`; the TA must be built with its own `export-secrets` too).
//!
//! Two steps, because the passkey is with a person, not on this host:
//! 1. [`challenge`]: a one-time TA nonce is issued and the WebAuthn challenge
//!    `SHA-256(nonce ‖ payload digest)` for exactly this (wallet, path) is printed;
//! 2. the owner signs it with the wallet's passkey (any WebAuthn client), and [`export`] sends
//!    the assertion with the request; the TA verifies it against the bound passkey and the
//!    payload before it returns the key. A missing or wrong assertion is refused by the TA.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use kms_proto::authz::{self, AuthorizedBody};
use kms_proto::{
    ExportPrivateKey, ExportPrivateKeyBody, ExportedKey, GetChallenge, HdPath, PasskeyAssertion,
    WalletId,
};
use kms_tee_client::TeeClient;
use serde::Deserialize;

use crate::error::{AdminError, Exit, Result};

/// The challenge the passkey must sign for an export of `path` of `wallet`.
pub async fn challenge(tee: &TeeClient, wallet: WalletId, path: HdPath) -> Result<[u8; 32]> {
    let nonce = tee
        .call_async(&GetChallenge { wallet_id: wallet })
        .await?
        .nonce;
    let body = ExportPrivateKeyBody {
        wallet_id: wallet,
        path,
    };
    Ok(authz::challenge(&nonce, &body.payload_digest()))
}

/// A WebAuthn assertion as JSON, each field base64url (no padding), as browsers'
/// `AuthenticatorAssertionResponse` gives them.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssertionJson {
    /// `authenticatorData`.
    pub authenticator_data: String,
    /// `clientDataJSON`.
    #[serde(rename = "clientDataJSON")]
    pub client_data_json: String,
    /// `signature` (ASN.1 DER).
    pub signature: String,
}

impl AssertionJson {
    /// The assertion's raw bytes.
    pub fn decode(&self) -> Result<PasskeyAssertion> {
        let field = |name: &str, v: &str| {
            URL_SAFE_NO_PAD
                .decode(v.trim_end_matches('='))
                .map_err(|_| {
                    AdminError::new(
                        Exit::Usage,
                        format!("assertion field {name} is not base64url"),
                    )
                })
        };
        Ok(PasskeyAssertion {
            authenticator_data: field("authenticatorData", &self.authenticator_data)?,
            client_data_json: field("clientDataJSON", &self.client_data_json)?,
            signature: field("signature", &self.signature)?,
        })
    }
}

/// Exports the key at `path` of `wallet`, authorised by `assertion` (over a challenge from
/// [`challenge`]).
pub async fn export(
    tee: &TeeClient,
    wallet: WalletId,
    path: HdPath,
    assertion: PasskeyAssertion,
) -> Result<ExportedKey> {
    Ok(tee
        .call_async(&ExportPrivateKey {
            body: ExportPrivateKeyBody {
                wallet_id: wallet,
                path,
            },
            assertion,
        })
        .await?)
}

/// The challenge as base64url, as WebAuthn clients take it.
pub fn challenge_b64(c: &[u8; 32]) -> String {
    URL_SAFE_NO_PAD.encode(c)
}
