//! A wallet owner with a software passkey, and the agents it creates, all through the TA.
//!
//! [`SoftPasskey`] makes real WebAuthn assertions (P-256 over `authenticatorData ‖
//! SHA-256(clientDataJSON)`, UP and UV set, rp id `localhost`) over challenges bound to TA
//! nonces and payload digests, exactly as the TA checks them. [`Owner`] creates (or seeds) a
//! wallet in the TA, creates, refreshes and revokes agents, signs UserOperations with the
//! owner key (`SignHash`: raw ECDSA over the userOpHash, what `AgentAccount` takes), signs for
//! an account's ERC-1271 check (`SignForAccount`: ERC-7739 `PersonalSign` for one account on one
//! chain) and, for tests that must show what does *not* work, makes EIP-191 personal-message
//! signatures (`SignMessage`). [`Agent`] holds an agent's JWT and signs userOpHashes with
//! `SignAgentUserOp`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use alloy::primitives::{Address, Bytes, B256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use kms_chain::operator::owner_sign_body;
use kms_companion::tee::{AgentSigningRequest, SignError, Tee};
use kms_proto::authz::{self, AuthorizedBody};
use kms_proto::{
    AccountSignContent, AgentCredential, CreateAgentKey, CreateWallet, GetChallenge, HdPath,
    JwtSignPayload, MintAgentBody, PasskeyAssertion, RefreshAgentBody, RevokeAgentKey,
    SeedWalletForTest, SignForAccount, SignForAccountBody, SignMessage, SignMessageBody,
    Signature65, WalletId,
};
use kms_tee_client::{TeeClient, TeeError};
use kms_test_support::Manual;
use sha2::{Digest, Sha256};

/// The relying party id of the test passkeys.
pub const RP_ID: &str = "localhost";

/// anvil's test mnemonic (docs/ARCHITECTURE.md#key-derivation): owner `0xf39F…2266`, agent 0 `0x4b39…dbBc`, agent 1
/// `0x71b4…3de7`.
pub const ANVIL_MNEMONIC: &str = "test test test test test test test test test test test junk";

/// The origin in the passkey's client data (the TA checks the challenge, the rp id hash, the
/// flags and the signature, not the origin).
const ORIGIN: &str = "http://localhost:3000";

/// A software passkey (P-256) with its signature counter: the tests' one hand-made
/// authenticator ([`kms_test_support::Manual`]), its assertions handed to the TA directly.
pub struct SoftPasskey(Manual);

impl std::fmt::Debug for SoftPasskey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftPasskey")
            .field("counter", &self.0.counter)
            .finish_non_exhaustive()
    }
}

impl SoftPasskey {
    /// A passkey whose key is derived from `seed` (deterministic).
    pub fn from_seed(seed: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(b"kms-e2e soft passkey");
        h.update(seed);
        let bytes: [u8; 32] = h.finalize().into();
        Self(Manual::with_key(
            p256::ecdsa::SigningKey::from_slice(&bytes).expect("a valid P-256 scalar"),
        ))
    }

    /// A passkey distinct from every other made in this process.
    pub fn unique() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        Self::from_seed(format!("{}:{n}:{nanos}", std::process::id()).as_bytes())
    }

    /// The public key, SEC1 uncompressed (65 bytes).
    pub fn public_key(&self) -> Vec<u8> {
        self.0.public_key()
    }

    /// An assertion over `challenge` (UP and UV set, rp id [`RP_ID`]).
    pub fn assert_challenge(&mut self, challenge: &[u8; 32]) -> PasskeyAssertion {
        let a = self.0.assertion(ORIGIN, &URL_SAFE_NO_PAD.encode(challenge));
        PasskeyAssertion {
            authenticator_data: a.authenticator_data,
            client_data_json: a.client_data_json,
            signature: a.signature,
        }
    }
}

/// A harness step failed.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    /// The TA refused or could not be reached.
    #[error(transparent)]
    Tee(#[from] TeeError),
    /// Signing through the TA failed its checks.
    #[error(transparent)]
    Signer(#[from] SignError),
    /// The TA answered with a signature that is not 65 bytes by the owner key.
    #[error("the TA's signature is not 65 bytes by the owner {expected}")]
    NotTheOwners {
        /// The owner address.
        expected: Address,
    },
}

/// A wallet in the TA and the passkey bound to it.
#[derive(Debug)]
pub struct Owner {
    tee: TeeClient,
    passkey: Mutex<SoftPasskey>,
    /// The wallet.
    pub wallet_id: WalletId,
    /// The owner address `m/44'/60'/0'/0/0`.
    pub address: Address,
}

/// An agent key and its current credential.
#[derive(Clone)]
pub struct Agent {
    /// The wallet.
    pub wallet_id: WalletId,
    /// The agent index.
    pub index: u32,
    /// The agent key address.
    pub address: Address,
    /// The compact JWT.
    pub jwt: String,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("wallet_id", &self.wallet_id)
            .field("index", &self.index)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Agent {
    fn from_credential(wallet_id: WalletId, c: &AgentCredential) -> Self {
        Self {
            wallet_id,
            index: c.agent_index,
            address: Address::from(c.address),
            jwt: c.to_jwt(),
        }
    }

    /// Has the TA sign `user_op_hash` for `account` with this agent's key (106 bytes, checked).
    pub async fn sign(
        &self,
        tee: &TeeClient,
        user_op_hash: B256,
        account: Address,
    ) -> Result<Bytes, OwnerError> {
        let (sig, _) = Tee::standalone(tee.clone())
            .sign_agent_user_op(&AgentSigningRequest {
                wallet_id: self.wallet_id,
                agent_index: self.index,
                jwt: &self.jwt,
                user_op_hash,
                account,
                expected_key: Some(self.address),
            })
            .await?;
        Ok(sig)
    }
}

impl Owner {
    /// A new wallet from TA randomness, bound to a fresh passkey.
    pub async fn create(tee: &TeeClient) -> Result<Self, OwnerError> {
        let passkey = SoftPasskey::unique();
        let out = tee
            .call_async(&CreateWallet {
                passkey_public_key: passkey.public_key(),
                rp_id: RP_ID.into(),
            })
            .await?;
        Ok(Self {
            tee: tee.clone(),
            passkey: Mutex::new(passkey),
            wallet_id: out.wallet_id,
            address: Address::from(out.owner.address),
        })
    }

    /// A wallet seeded from `mnemonic` (test seeding must be enabled in `ta-sim`).
    pub async fn seed(tee: &TeeClient, mnemonic: &str) -> Result<Self, OwnerError> {
        let passkey = SoftPasskey::unique();
        let out = tee
            .call_async(&SeedWalletForTest {
                mnemonic: mnemonic.into(),
                passkey_public_key: passkey.public_key(),
                rp_id: RP_ID.into(),
            })
            .await?;
        Ok(Self {
            tee: tee.clone(),
            passkey: Mutex::new(passkey),
            wallet_id: out.wallet_id,
            address: Address::from(out.owner.address),
        })
    }

    /// The TA client.
    pub fn tee(&self) -> &TeeClient {
        &self.tee
    }

    /// An assertion for `body`, over a fresh TA nonce: `SHA-256(nonce ‖ payload digest)`.
    pub async fn authorize<B: AuthorizedBody>(
        &self,
        body: &B,
    ) -> Result<PasskeyAssertion, OwnerError> {
        let nonce = self
            .tee
            .call_async(&GetChallenge {
                wallet_id: self.wallet_id,
            })
            .await?
            .nonce;
        let challenge = authz::challenge(&nonce, &body.payload_digest());
        Ok(self
            .passkey
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .assert_challenge(&challenge))
    }

    /// Creates agent `index` (credential lifetime `ttl_secs`).
    pub async fn create_agent(&self, index: u32, ttl_secs: u64) -> Result<Agent, OwnerError> {
        let body = MintAgentBody {
            wallet_id: self.wallet_id,
            label: format!("agent-{index}"),
            ttl_secs,
        };
        let assertion = self.authorize(&body).await?;
        let cred = self
            .tee
            .call_async(&CreateAgentKey {
                agent_index: index,
                body,
                assertion,
            })
            .await?;
        Ok(Agent::from_credential(self.wallet_id, &cred))
    }

    /// Issues a new credential for agent `index`, superseding the previous one.
    pub async fn refresh_agent(&self, index: u32, ttl_secs: u64) -> Result<Agent, OwnerError> {
        let body = RefreshAgentBody {
            wallet_id: self.wallet_id,
            agent_index: index,
            ttl_secs,
        };
        let assertion = self.authorize(&body).await?;
        let cred = self
            .tee
            .call_async(&JwtSignPayload { body, assertion })
            .await?;
        Ok(Agent::from_credential(self.wallet_id, &cred))
    }

    /// Revokes agent `index` in the TA (its credentials die).
    pub async fn revoke_agent(&self, index: u32) -> Result<(), OwnerError> {
        self.tee
            .call_async(&RevokeAgentKey {
                wallet_id: self.wallet_id,
                agent_index: index,
            })
            .await?;
        Ok(())
    }

    /// Signs a UserOperation hash with the owner key: `SignHash` (raw ECDSA) over the
    /// userOpHash, authorised by the passkey over [`owner_sign_body`]; the 65-byte result is
    /// checked.
    pub async fn sign_user_op(&self, user_op_hash: B256) -> Result<Bytes, OwnerError> {
        let assertion = self
            .authorize(&owner_sign_body(self.wallet_id, user_op_hash))
            .await?;
        Ok(Tee::standalone(self.tee.clone())
            .sign_owner_user_op(self.wallet_id, user_op_hash, assertion, self.address)
            .await?)
    }

    /// The owner key's ERC-1271 signature for `account` on `chain_id` (`SignForAccount`, the
    /// ERC-7739 `PersonalSign` wrapping of `content`'s hash in the account's EIP-712 domain),
    /// authorised by the passkey; checked to be 65 bytes by the owner key.
    pub async fn sign_for_account(
        &self,
        chain_id: u64,
        account: Address,
        content: AccountSignContent,
    ) -> Result<Bytes, OwnerError> {
        let body = SignForAccountBody {
            wallet_id: self.wallet_id,
            path: HdPath::OWNER,
            chain_id,
            account: account.into_array(),
            content,
        };
        let assertion = self.authorize(&body).await?;
        let sig = self
            .tee
            .call_async(&SignForAccount { body, assertion })
            .await?;
        self.checked(sig)
    }

    /// The owner key's EIP-191 personal-message signature of `message` (`SignMessage`), which
    /// is neither a UserOperation signature nor an ERC-1271 signature of its `AgentAccount`:
    /// for tests showing that.
    pub async fn sign_personal_message(&self, message: &[u8]) -> Result<Bytes, OwnerError> {
        let body = SignMessageBody {
            wallet_id: self.wallet_id,
            path: HdPath::OWNER,
            message: message.to_vec(),
        };
        let assertion = self.authorize(&body).await?;
        let sig = self
            .tee
            .call_async(&SignMessage { body, assertion })
            .await?;
        self.checked(sig)
    }

    fn checked(&self, sig: Signature65) -> Result<Bytes, OwnerError> {
        if sig.bytes.len() != 65 || Address::from(sig.address) != self.address {
            return Err(OwnerError::NotTheOwners {
                expected: self.address,
            });
        }
        Ok(Bytes::from(sig.bytes))
    }
}
