//! The Trusted Application core.
//!
//! Plain Rust with no OS: [`TaCore::invoke`] takes a command id and request
//! bytes and returns response bytes (see [`kms_proto::codec`]). Sealed
//! storage, randomness, the clock and the rollback counter are injected
//! through [`SealedStorage`], [`Entropy`], [`Clock`] and [`MonotonicCounter`]
//! (rollback detection: see [`rollback`]); the OP-TEE entry points
//! (`ta/optee`) and the
//! host simulator (`ta/sim`) are thin shells around this one core, so the
//! same bytes go through both. What both shells share lives here too:
//!
//! * [`store`] — [`SealedStorage`] as one sealed snapshot of the whole map,
//!   replaced atomically on every write batch; each shell plugs in its
//!   backend (an OP-TEE persistent object, the simulator's AEAD file).
//! * [`snapshot`] — the snapshot's encoding.
//! * [`clock`] — a clock that never goes backwards across restarts.
//!
//! Key material is generated from [`Entropy`] inside the core and never
//! leaves it: no command returns a seed, a private key or an HMAC secret
//! (except `export-secrets` development builds).
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

mod audit;
pub mod clock;
mod eth;
mod jwt;
mod keys;
mod operator;
mod passkey;
mod records;
pub mod rollback;
pub mod snapshot;
pub mod store;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use kms_proto::authz::AuthorizedBody;
use kms_proto::session_signature::SessionSignature;
use kms_proto::*;
use records::{AgentRecord, JwtStore, OperatorRecord, WalletRecord, RECORD_VERSION};
use zeroize::Zeroizing;

pub use kms_proto::StorageFault;
pub use passkey::{
    NonceTableUsage, MAX_NONCES_PER_WALLET, MAX_PENDING_NONCES, NONCE_TABLE_MAX_BYTES,
};
pub use rollback::{sealed_version, touches_state, MonotonicCounter, STATE_VERSION_KEY};

/// One operation of an atomic storage write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOp<'a> {
    /// Create or replace the object `key`.
    Put(&'a str, &'a [u8]),
    /// Delete the object `key` (absent is fine).
    Delete(&'a str),
}

/// Sealed (confidential, integrity-protected, persistent) key-value storage.
///
/// Values are plaintext to the core; the implementation seals them (OP-TEE
/// secure storage, or the simulator's AEAD-encrypted file).
pub trait SealedStorage {
    /// Read the object `key`.
    fn read(&mut self, key: &str) -> Result<Option<Vec<u8>>, StorageFault>;
    /// Apply `ops` atomically: after a crash either all or none are visible.
    fn write(&mut self, ops: &[WriteOp<'_>]) -> Result<(), StorageFault>;
}

/// The TA's randomness source.
pub trait Entropy {
    /// Fill `buf` with cryptographically secure random bytes.
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError>;
}

/// The randomness source failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntropyError;

/// The TA's clock.
pub trait Clock {
    /// Seconds since the Unix epoch.
    fn now(&self) -> u64;
}

/// Build-independent settings of the core.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// Serve `SeedWalletForTest` (only effective with the `test-seed`
    /// feature; the simulator turns it on with a flag).
    pub test_seed_enabled: bool,
}

/// Whether the test seeding command is compiled into this build. The OP-TEE
/// shell refuses to compile when it is.
pub const TEST_SEED_COMPILED: bool = cfg!(feature = "test-seed");

/// Longest label of an agent key.
pub const MAX_LABEL_LEN: usize = 128;
/// Longest message `SignMessage` and `SignForAccount` accept.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;
/// Most wallets whose public facts are cached.
const WALLET_CACHE_CAP: usize = 4096;
/// Most agent records cached.
const AGENT_CACHE_CAP: usize = 65536;

/// Public facts of a wallet kept in memory (no secret).
#[derive(Clone)]
struct WalletPublic {
    passkey_public_key: Vec<u8>,
    rp_id_hash: [u8; 32],
    created_at: u64,
}

/// Whether [`TaCore::begin`] may leave part of command `cmd` to run outside the core (only
/// `SignAgentUserOp` and `SignAgentUserOps`, whose ECDSA needs no state).
pub fn runs_in_parallel(cmd: u32) -> bool {
    cmd == CommandId::SignAgentUserOp as u32 || cmd == CommandId::SignAgentUserOps as u32
}

/// What [`TaCore::begin`] leaves to do.
pub enum Begun {
    /// The encoded response, complete.
    Done(Vec<u8>),
    /// Checked agent signatures still to compute: [`PendingSignature::finish`].
    Sign(PendingSignature),
}

/// Agent signatures whose credentials were checked against the state (one for
/// `SignAgentUserOp`, each request's for `SignAgentUserOps`); holds copies of the agents' keys
/// (wiped when dropped) and nothing else of the core.
pub struct PendingSignature(Pending);

enum Pending {
    /// `SignAgentUserOp`.
    One(CheckedSignature),
    /// `SignAgentUserOps`: each request's checked signature, or its refusal.
    Many(Vec<Result<CheckedSignature, TaError>>),
}

impl PendingSignature {
    /// Compute the ECDSA signatures and encode the response (what `invoke` would have returned).
    pub fn finish(self) -> Vec<u8> {
        match self.0 {
            Pending::One(one) => encode_response(one.sign().as_ref()),
            Pending::Many(many) => encode_response(Ok(&sign_each(many))),
        }
    }
}

/// Each checked request signed; each refusal kept.
fn sign_each(
    checked: Vec<Result<CheckedSignature, TaError>>,
) -> Vec<Result<AgentSignature, TaError>> {
    checked
        .into_iter()
        .map(|c| c.and_then(CheckedSignature::sign))
        .collect()
}

/// One agent signature whose credential was checked: the agent's key (wiped when dropped),
/// the account and the digest.
struct CheckedSignature {
    signing_key: k256::ecdsa::SigningKey,
    address: [u8; 20],
    account: [u8; 20],
    digest: [u8; 32],
}

impl CheckedSignature {
    fn sign(self) -> Result<AgentSignature, TaError> {
        let key = keys::DerivedKey {
            signing_key: self.signing_key,
            address: self.address,
            public_key: [0; 33],
        };
        let rsv = key.sign_digest(&self.digest)?;
        let signature = SessionSignature {
            account: self.account,
            key: key.address,
            rsv,
        };
        Ok(AgentSignature {
            signature: signature.encode().to_vec(),
            agent_address: key.address,
        })
    }
}

/// The TA core: one instance serves every session.
pub struct TaCore<S, E, C, M> {
    storage: S,
    entropy: E,
    clock: C,
    counter: M,
    freshness: rollback::Freshness,
    config: Config,
    wallets: BTreeMap<WalletId, WalletPublic>,
    agents: BTreeMap<(WalletId, u32), AgentRecord>,
    jwt: Option<JwtStore>,
    /// The operator key's address once read or created (the key never changes; an accepted
    /// restore forgets it with the rest of the cached state).
    operator_address: Option<[u8; 20]>,
    keys: keys::KeyCache,
    nonces: passkey::Nonces,
}

impl<S: SealedStorage, E: Entropy, C: Clock, M: MonotonicCounter> TaCore<S, E, C, M> {
    /// A core over the given storage, randomness, clock and rollback counter (see
    /// [`MonotonicCounter`]: the sealed state's version is checked against it before the first
    /// command that touches state).
    pub fn new(storage: S, entropy: E, clock: C, counter: M, config: Config) -> Self {
        TaCore {
            storage,
            entropy,
            clock,
            counter,
            freshness: rollback::Freshness::Unchecked,
            config,
            wallets: BTreeMap::new(),
            agents: BTreeMap::new(),
            jwt: None,
            operator_address: None,
            keys: keys::KeyCache::default(),
            nonces: passkey::Nonces::default(),
        }
    }

    /// How much the table of pending passkey nonces holds (bounded: see
    /// [`MAX_PENDING_NONCES`] and [`NONCE_TABLE_MAX_BYTES`]).
    pub fn nonce_table_usage(&self) -> NonceTableUsage {
        self.nonces.usage()
    }

    /// Execute command `cmd` on request bytes `input`; returns the encoded
    /// response (success or typed error). Never panics on any input.
    pub fn invoke(&mut self, cmd: u32, input: &[u8]) -> Vec<u8> {
        let Some(id) = CommandId::from_u32(cmd) else {
            return encode_response::<Empty>(Err(&TaError::UnknownCommand(cmd)));
        };
        // A rolled-back sealed state is refused before anything reads it (see `rollback`).
        if touches_state(id) {
            if let Err(e) = self.ensure_fresh() {
                return encode_response::<Empty>(Err(&e));
            }
        }
        match id {
            CommandId::CreateWallet => self.run(input, Self::create_wallet),
            CommandId::RemoveWallet => self.run(input, Self::remove_wallet),
            CommandId::DeriveAddress => self.run(input, Self::derive_address),
            CommandId::SignTransaction => self.run(input, Self::sign_transaction),
            CommandId::SignMessage => self.run(input, Self::sign_message),
            CommandId::SignHash => self.run(input, Self::sign_hash),
            #[cfg(feature = "export-secrets")]
            CommandId::ExportPrivateKey => self.run(input, Self::export_private_key),
            #[cfg(not(feature = "export-secrets"))]
            CommandId::ExportPrivateKey => {
                encode_response::<Empty>(Err(&TaError::UnknownCommand(cmd)))
            }
            CommandId::GetPublicKey => self.run(input, Self::get_public_key),
            CommandId::ChangePasskey => self.run(input, Self::change_passkey),
            CommandId::GetChallenge => self.run(input, Self::get_challenge),
            CommandId::GetWalletInfo => self.run(input, Self::get_wallet_info),
            CommandId::CreateAgentKey => self.run(input, Self::create_agent_key),
            CommandId::SignAgentUserOp => self.run(input, Self::sign_agent_user_op),
            CommandId::SignAgentUserOps => self.run(input, Self::sign_agent_user_ops),
            CommandId::JwtHmacSign => {
                self.run(input, |_, _: JwtHmacSign| Err(TaError::Unsupported))
            }
            CommandId::JwtHmacVerify => self.run(input, Self::jwt_hmac_verify),
            CommandId::JwtRotateSecret => self.run(input, Self::jwt_rotate_secret),
            CommandId::JwtSignPayload => self.run(input, Self::jwt_sign_payload),
            CommandId::RevokeAgentKey => self.run(input, Self::revoke_agent_key),
            CommandId::GetAgentState => self.run(input, Self::get_agent_state),
            CommandId::JwtSecretStatus => self.run(input, Self::jwt_secret_status),
            CommandId::OperatorKey => self.run(input, Self::operator_key),
            CommandId::OperatorSignRevokeSession => {
                self.run(input, Self::operator_sign_revoke_session)
            }
            CommandId::TaInfo => self.run(input, Self::ta_info),
            CommandId::SignForAccount => self.run(input, Self::sign_for_account),
            CommandId::AcceptRestore => self.run(input, Self::accept_restore),
            CommandId::AuditCheckpoint => self.run(input, Self::audit_checkpoint),
            CommandId::AuditAnchor => self.run(input, Self::audit_anchor),
            CommandId::SignEip7702Delegation => self.run(input, Self::sign_eip7702_delegation),
            #[cfg(feature = "test-seed")]
            CommandId::SeedWalletForTest => self.run(input, Self::seed_wallet_for_test),
            #[cfg(not(feature = "test-seed"))]
            CommandId::SeedWalletForTest => {
                encode_response::<Empty>(Err(&TaError::UnknownCommand(cmd)))
            }
        }
    }

    fn run<Cmd: Command>(
        &mut self,
        input: &[u8],
        handler: fn(&mut Self, Cmd) -> Result<Cmd::Output, TaError>,
    ) -> Vec<u8> {
        let result = decode_request::<Cmd>(input)
            .map_err(TaError::from)
            .and_then(|req| handler(self, req));
        encode_response(result.as_ref())
    }

    // ------------------------------------------------------------ helpers

    fn random<const N: usize>(&mut self) -> Result<Zeroizing<[u8; N]>, TaError> {
        let mut buf = Zeroizing::new([0u8; N]);
        self.entropy
            .fill(&mut buf[..])
            .map_err(|_| TaError::Entropy)?;
        Ok(buf)
    }

    fn read_wallet_record(storage: &mut S, id: &WalletId) -> Result<WalletRecord, TaError> {
        let bytes = storage
            .read(&records::wallet_key(id))?
            .map(Zeroizing::new)
            .ok_or(TaError::WalletNotFound)?;
        Ok(records::decode::<WalletRecord>(&bytes)?)
    }

    fn wallet_public(&mut self, id: &WalletId) -> Result<WalletPublic, TaError> {
        if let Some(w) = self.wallets.get(id) {
            return Ok(w.clone());
        }
        let record = Self::read_wallet_record(&mut self.storage, id)?;
        let public = WalletPublic {
            passkey_public_key: record.passkey_public_key.clone(),
            rp_id_hash: record.rp_id_hash,
            created_at: record.created_at,
        };
        if self.wallets.len() >= WALLET_CACHE_CAP {
            self.wallets.clear();
        }
        self.wallets.insert(*id, public.clone());
        Ok(public)
    }

    /// Verify a passkey assertion over `body` for `wallet` and consume its
    /// nonce.
    fn authorize<B: AuthorizedBody>(
        &mut self,
        wallet: &WalletId,
        body: &B,
        assertion: &PasskeyAssertion,
    ) -> Result<(), TaError> {
        let public = self.wallet_public(wallet)?;
        let now = self.clock.now();
        self.nonces.verify_and_consume(
            wallet,
            &public.passkey_public_key,
            &public.rp_id_hash,
            &body.payload_digest(),
            assertion,
            now,
        )?;
        Ok(())
    }

    fn derived(&mut self, wallet: &WalletId, path: HdPath) -> Result<&keys::DerivedKey, TaError> {
        let storage = &mut self.storage;
        self.keys
            .get_or_derive(wallet, path, || Self::read_wallet_record(storage, wallet))
    }

    fn agent(&mut self, wallet: &WalletId, index: u32) -> Result<Option<AgentRecord>, TaError> {
        if let Some(a) = self.agents.get(&(*wallet, index)) {
            return Ok(Some(a.clone()));
        }
        let Some(bytes) = self.storage.read(&records::agent_key(wallet, index))? else {
            return Ok(None);
        };
        let record = records::decode::<AgentRecord>(&bytes)?;
        self.cache_agent(*wallet, index, record.clone());
        Ok(Some(record))
    }

    fn cache_agent(&mut self, wallet: WalletId, index: u32, record: AgentRecord) {
        if self.agents.len() >= AGENT_CACHE_CAP && !self.agents.contains_key(&(wallet, index)) {
            self.agents.clear();
        }
        self.agents.insert((wallet, index), record);
    }

    fn jwt_store(&mut self) -> Result<&mut JwtStore, TaError> {
        if self.jwt.is_none() {
            let store = match self.storage.read(records::JWT_STORE_KEY)? {
                Some(bytes) => records::decode::<JwtStore>(&Zeroizing::new(bytes))?,
                None => JwtStore {
                    version: RECORD_VERSION,
                    entries: Vec::new(),
                },
            };
            self.jwt = Some(store);
        }
        self.jwt.as_mut().ok_or(TaError::Internal)
    }

    /// The store with a current secret, creating the first one if needed.
    /// Returns the encoded store when it changed (to be written with the
    /// caller's other changes).
    fn jwt_store_with_current(&mut self) -> Result<(JwtStore, bool), TaError> {
        let now = self.clock.now();
        let needs_first = self.jwt_store()?.current().is_none();
        let mut store = self.jwt_store()?.clone();
        if needs_first {
            let random = self.random::<40>()?;
            store.rotate(RotationMode::Normal, jwt::new_secret(&random, now), now)?;
        }
        Ok((store, needs_first))
    }

    fn agent_state(wallet: WalletId, index: u32, r: &AgentRecord) -> AgentState {
        AgentState {
            wallet_id: wallet,
            agent_index: index,
            address: r.address,
            generation: r.generation,
            revoked: r.revoked_at.is_some(),
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        }
    }

    // ----------------------------------------------------------- wallets

    fn create_wallet(&mut self, req: CreateWallet) -> Result<CreateWalletOutput, TaError> {
        let entropy = self.random::<32>()?;
        self.insert_wallet(&entropy[..], &req.passkey_public_key, &req.rp_id)
    }

    fn insert_wallet(
        &mut self,
        entropy: &[u8],
        passkey_public_key: &[u8],
        rp_id: &str,
    ) -> Result<CreateWalletOutput, TaError> {
        passkey::validate_public_key(passkey_public_key)?;
        let rp_id_hash = passkey::rp_id_hash(rp_id)?;
        let mut id = *self.random::<16>()?;
        // RFC 4122 version 4, variant 1.
        id[6] = (id[6] & 0x0f) | 0x40;
        id[8] = (id[8] & 0x3f) | 0x80;
        let wallet_id = WalletId(id);
        if self
            .storage
            .read(&records::wallet_key(&wallet_id))?
            .is_some()
        {
            return Err(TaError::WalletExists);
        }
        let record = WalletRecord {
            version: RECORD_VERSION,
            entropy: entropy.to_vec(),
            passkey_public_key: passkey_public_key.to_vec(),
            rp_id_hash,
            created_at: self.clock.now(),
        };
        let root = keys::account_root(&record)?;
        let owner = keys::derive_below(&root, HdPath::OWNER)?.info(HdPath::OWNER);
        let bytes = records::encode(&record)?;
        self.commit(&[WriteOp::Put(&records::wallet_key(&wallet_id), &bytes)])?;
        #[cfg(feature = "export-secrets")]
        let mnemonic = Some(keys::mnemonic_of(&record)?);
        #[cfg(not(feature = "export-secrets"))]
        let mnemonic = None;
        Ok(CreateWalletOutput {
            wallet_id,
            owner,
            mnemonic,
        })
    }

    #[cfg(feature = "test-seed")]
    fn seed_wallet_for_test(
        &mut self,
        req: SeedWalletForTest,
    ) -> Result<CreateWalletOutput, TaError> {
        if !self.config.test_seed_enabled {
            return Err(TaError::Unsupported);
        }
        let mnemonic =
            bip39::Mnemonic::parse_in_normalized(bip39::Language::English, &req.mnemonic)
                .map_err(|_| TaError::InvalidMnemonic)?;
        let (entropy, len) = mnemonic.to_entropy_array();
        let entropy = Zeroizing::new(entropy);
        self.insert_wallet(&entropy[..len], &req.passkey_public_key, &req.rp_id)
    }

    fn remove_wallet(&mut self, req: RemoveWallet) -> Result<Empty, TaError> {
        let id = req.body.wallet_id;
        self.authorize(&id, &req.body, &req.assertion)?;
        self.commit(&[WriteOp::Delete(&records::wallet_key(&id))])?;
        self.wallets.remove(&id);
        self.keys.forget_wallet(&id);
        self.nonces.forget_wallet(&id);
        // Agent records stay as tombstones: with the wallet gone no agent key
        // can be derived, and a re-created wallet gets a fresh id.
        self.agents.retain(|(w, _), _| *w != id);
        Ok(Empty {})
    }

    fn derive_address(&mut self, req: DeriveAddress) -> Result<AddressInfo, TaError> {
        let b = &req.body;
        self.authorize(&b.wallet_id, b, &req.assertion)?;
        Ok(self.derived(&b.wallet_id, b.path)?.info(b.path))
    }

    fn get_public_key(&mut self, req: GetPublicKey) -> Result<AddressInfo, TaError> {
        let b = &req.body;
        self.authorize(&b.wallet_id, b, &req.assertion)?;
        Ok(self.derived(&b.wallet_id, b.path)?.info(b.path))
    }

    fn sign_transaction(&mut self, req: SignTransaction) -> Result<SignedTransaction, TaError> {
        let b = &req.body;
        // Refuse a malformed transaction before spending the nonce on it.
        if let Transaction::Legacy { to: Some(to), .. }
        | Transaction::Eip1559 { to: Some(to), .. } = &b.transaction
        {
            if to.len() != 20 {
                return Err(TaError::InvalidRecipientLength(
                    u32::try_from(to.len()).unwrap_or(u32::MAX),
                ));
            }
        }
        self.authorize(&b.wallet_id, b, &req.assertion)?;
        let key = self.derived(&b.wallet_id, b.path)?;
        eth::sign_transaction(key, &b.transaction)
    }

    fn sign_message(&mut self, req: SignMessage) -> Result<Signature65, TaError> {
        let b = &req.body;
        if b.message.len() > MAX_MESSAGE_LEN {
            return Err(TaError::MessageTooLong);
        }
        self.authorize(&b.wallet_id, b, &req.assertion)?;
        let digest = keys::eip191_hash(&b.message);
        let key = self.derived(&b.wallet_id, b.path)?;
        Ok(Signature65 {
            bytes: key.sign_digest(&digest)?.to_vec(),
            address: key.address,
        })
    }

    fn sign_hash(&mut self, req: SignHash) -> Result<Signature65, TaError> {
        let b = &req.body;
        self.authorize(&b.wallet_id, b, &req.assertion)?;
        let key = self.derived(&b.wallet_id, b.path)?;
        Ok(Signature65 {
            bytes: key.sign_digest(&b.hash)?.to_vec(),
            address: key.address,
        })
    }

    /// ERC-1271 signature for one `AgentAccount` on one chain: the ERC-7739 `PersonalSign`
    /// digest of the content's hash (see [`kms_proto::SignForAccount`]), signed raw.
    fn sign_for_account(&mut self, req: SignForAccount) -> Result<Signature65, TaError> {
        let b = &req.body;
        if let AccountSignContent::Message(m) = &b.content {
            if m.len() > MAX_MESSAGE_LEN {
                return Err(TaError::MessageTooLong);
            }
        }
        self.authorize(&b.wallet_id, b, &req.assertion)?;
        let hash = match &b.content {
            AccountSignContent::Message(m) => keys::eip191_hash(m),
            AccountSignContent::Hash(h) => *h,
        };
        let digest = eth::erc7739_personal_sign_digest(b.chain_id, &b.account, &hash);
        let key = self.derived(&b.wallet_id, b.path)?;
        Ok(Signature65 {
            bytes: key.sign_digest(&digest)?.to_vec(),
            address: key.address,
        })
    }

    /// An EIP-7702 delegation of the owner's EOA and, when asked, the delegated account's first
    /// userOpHash, both signed by the owner key under one assertion (see
    /// [`kms_proto::SignEip7702Delegation`]). An authorisation the TA will not sign is refused
    /// before the assertion is checked, so its nonce stays usable.
    fn sign_eip7702_delegation(
        &mut self,
        req: SignEip7702Delegation,
    ) -> Result<Eip7702Signatures, TaError> {
        let b = &req.body;
        eth::eip7702_authorization_hash(b)?;
        self.authorize(&b.wallet_id, b, &req.assertion)?;
        let key = self.derived(&b.wallet_id, HdPath::OWNER)?;
        eth::sign_eip7702_delegation(key, b)
    }

    #[cfg(feature = "export-secrets")]
    fn export_private_key(&mut self, req: ExportPrivateKey) -> Result<ExportedKey, TaError> {
        let b = &req.body;
        self.authorize(&b.wallet_id, b, &req.assertion)?;
        let key = self.derived(&b.wallet_id, b.path)?;
        Ok(ExportedKey {
            path: b.path,
            address: key.address,
            private_key: key.signing_key.to_bytes().into(),
        })
    }

    fn change_passkey(&mut self, req: ChangePasskey) -> Result<Empty, TaError> {
        let b = &req.body;
        passkey::validate_public_key(&b.new_passkey_public_key)?;
        let rp_id_hash = passkey::rp_id_hash(&b.new_rp_id)?;
        self.authorize(&b.wallet_id, b, &req.assertion)?;
        let mut record = Self::read_wallet_record(&mut self.storage, &b.wallet_id)?;
        record.passkey_public_key = b.new_passkey_public_key.clone();
        record.rp_id_hash = rp_id_hash;
        let bytes = records::encode(&record)?;
        self.commit(&[WriteOp::Put(&records::wallet_key(&b.wallet_id), &bytes)])?;
        self.wallets.remove(&b.wallet_id);
        // Challenges issued for the old passkey are void.
        self.nonces.forget_wallet(&b.wallet_id);
        Ok(Empty {})
    }

    fn get_challenge(&mut self, req: GetChallenge) -> Result<ChallengeNonce, TaError> {
        self.wallet_public(&req.wallet_id)?;
        let nonce = *self.random::<32>()?;
        let now = self.clock.now();
        let expires_at = self.nonces.issue(req.wallet_id, nonce, now);
        Ok(ChallengeNonce { nonce, expires_at })
    }

    fn get_wallet_info(&mut self, req: GetWalletInfo) -> Result<WalletInfo, TaError> {
        let public = self.wallet_public(&req.wallet_id)?;
        let owner = self
            .derived(&req.wallet_id, HdPath::OWNER)?
            .info(HdPath::OWNER);
        Ok(WalletInfo {
            wallet_id: req.wallet_id,
            owner,
            passkey_public_key: public.passkey_public_key,
            rp_id_hash: public.rp_id_hash,
            created_at: public.created_at,
        })
    }

    // ------------------------------------------------------------ agents

    fn create_agent_key(&mut self, req: CreateAgentKey) -> Result<AgentCredential, TaError> {
        let b = &req.body;
        let wallet = b.wallet_id;
        self.authorize(&wallet, b, &req.assertion)?;
        if req.agent_index > HdPath::MAX_INDEX {
            return Err(TaError::InvalidAgentIndex);
        }
        if b.label.len() > MAX_LABEL_LEN {
            return Err(TaError::InvalidLabel);
        }
        jwt::check_ttl(b.ttl_secs)?;
        if self.agent(&wallet, req.agent_index)?.is_some() {
            return Err(TaError::AgentExists);
        }
        let path = HdPath::agent(req.agent_index);
        let (address, public_key) = {
            let k = self.derived(&wallet, path)?;
            (k.address, k.public_key)
        };
        let now = self.clock.now();
        let record = AgentRecord {
            version: RECORD_VERSION,
            address,
            generation: 1,
            created_at: now,
            revoked_at: None,
        };
        self.mint_and_store(wallet, req.agent_index, record, public_key, b.ttl_secs)
    }

    /// Write `record` (and the JWT store if it gained its first secret, the operator key if
    /// it was created for this credential) in one atomic batch, then mint a credential for its
    /// generation.
    ///
    /// The credential names this TA in its `iss` claim: the operator key's address. The
    /// companion creates that key at its first start, so it normally exists; a TA that mints
    /// a credential before anything asked for it (a bare core, a tool driving the TA directly)
    /// creates it here, in the same batch as the agent record, so no credential is ever minted
    /// without the claim nor names a key that was not kept.
    fn mint_and_store(
        &mut self,
        wallet: WalletId,
        index: u32,
        record: AgentRecord,
        public_key: [u8; 33],
        ttl_secs: u64,
    ) -> Result<AgentCredential, TaError> {
        let now = self.clock.now();
        let (store, store_changed) = self.jwt_store_with_current()?;
        let (issuer, new_operator) = match self.operator_address()? {
            Some(address) => (address, None),
            None => {
                let op = self.new_operator_record()?;
                (Self::operator_signer(&op)?.address, Some(op))
            }
        };
        let current = store.current().ok_or(TaError::NoCurrentKid)?;
        let credential = jwt::mint(
            current,
            jwt::MintInput {
                wallet_id: &wallet,
                agent_index: index,
                address: record.address,
                public_key,
                generation: record.generation,
                ttl_secs,
                now,
                issuer,
            },
        )?;
        let agent_bytes = records::encode(&record)?;
        let agent_key = records::agent_key(&wallet, index);
        let store_bytes = if store_changed {
            Some(records::encode(&store)?)
        } else {
            None
        };
        let operator_bytes = new_operator.as_ref().map(records::encode).transpose()?;
        let mut ops = Vec::with_capacity(3);
        if let Some(bytes) = &store_bytes {
            ops.push(WriteOp::Put(records::JWT_STORE_KEY, bytes));
        }
        if let Some(bytes) = &operator_bytes {
            ops.push(WriteOp::Put(records::OPERATOR_KEY, bytes));
        }
        ops.push(WriteOp::Put(&agent_key, &agent_bytes));
        self.commit(&ops)?;
        if store_changed {
            self.jwt = Some(store);
        }
        if new_operator.is_some() {
            self.operator_address = Some(issuer);
        }
        self.cache_agent(wallet, index, record);
        Ok(credential)
    }

    /// Verify a credential fully: MAC by kid, lifetime, agent state and
    /// generation. Returns the claims.
    fn verify_credential(
        &mut self,
        token: &str,
        expect: Option<(&WalletId, u32)>,
    ) -> Result<(VerifiedCredential, WalletId, AgentRecord), TaError> {
        let parsed = kms_proto::jwt::parse(token)?;
        // A credential naming another TA is refused as such, before its MAC (which would fail
        // too: that TA's secrets are not here). One without the claim was minted before it
        // existed and is checked like any other.
        if let Some(iss) = &parsed.claims.iss {
            let this = self.operator_address()?;
            if this.map(|a| records::address_hex(&a)).as_ref() != Some(iss) {
                return Err(JwtError::OtherTa.into());
            }
        }
        let now = self.clock.now();
        self.jwt_store()?.verify_mac(&parsed, now)?;
        let claims = parsed.claims;
        let wallet: WalletId = claims.wallet_id.parse().map_err(|_| JwtError::Malformed)?;
        if let Some((w, i)) = expect {
            if *w != wallet {
                return Err(JwtError::WalletMismatch.into());
            }
            if i != claims.agent_index {
                return Err(JwtError::IndexMismatch.into());
            }
        }
        if claims.sub != kms_proto::jwt::key_id(&wallet, claims.agent_index) {
            return Err(JwtError::Malformed.into());
        }
        let record = self
            .agent(&wallet, claims.agent_index)?
            .ok_or(JwtError::AgentUnknown)?;
        if record.revoked_at.is_some() {
            return Err(JwtError::AgentRevoked.into());
        }
        if claims.gen != record.generation {
            return Err(JwtError::StaleGeneration.into());
        }
        if claims.agent_address != records::address_hex(&record.address) {
            return Err(JwtError::Malformed.into());
        }
        jwt::check_lifetime(&claims, now)?;
        Ok((
            VerifiedCredential {
                kid: parsed.header.kid,
                claims,
            },
            wallet,
            record,
        ))
    }

    fn sign_agent_user_op(&mut self, req: SignAgentUserOp) -> Result<AgentSignature, TaError> {
        self.check_agent_sign(req)?.sign()
    }

    fn sign_agent_user_ops(
        &mut self,
        req: SignAgentUserOps,
    ) -> Result<Vec<Result<AgentSignature, TaError>>, TaError> {
        Ok(sign_each(self.check_agent_signs(req)?))
    }

    /// The serialised phase of `SignAgentUserOps`: each request checked as
    /// [`Self::check_agent_sign`] checks it alone, in order; a refusal is that request's answer.
    fn check_agent_signs(
        &mut self,
        req: SignAgentUserOps,
    ) -> Result<Vec<Result<CheckedSignature, TaError>>, TaError> {
        let n = req.requests.len();
        if n == 0 || n > MAX_AGENT_SIGNATURES_PER_CALL {
            return Err(TaError::SignBatchInvalid {
                max: MAX_AGENT_SIGNATURES_PER_CALL as u32,
            });
        }
        Ok(req
            .requests
            .into_iter()
            .map(|r| self.check_agent_sign(r))
            .collect())
    }

    /// The serialised phase of `SignAgentUserOp`: the credential checked against the state
    /// (MAC by kid, claims, generation, revocation, lifetime) and what the signature needs
    /// taken out of it. The ECDSA itself is [`PendingSignature::sign`].
    fn check_agent_sign(&mut self, req: SignAgentUserOp) -> Result<CheckedSignature, TaError> {
        let (_, wallet, record) =
            self.verify_credential(&req.jwt, Some((&req.wallet_id, req.agent_index)))?;
        let digest = keys::eip191_hash(&req.user_op_hash);
        let key = self.derived(&wallet, HdPath::agent(req.agent_index))?;
        if key.address != record.address {
            return Err(TaError::Internal);
        }
        Ok(CheckedSignature {
            signing_key: key.signing_key.clone(),
            address: key.address,
            account: req.account,
            digest,
        })
    }

    /// Start command `cmd`: either its whole response ([`Begun::Done`], every command but two)
    /// or, for `SignAgentUserOp` whose credential passed every check (`SignAgentUserOps`: for
    /// every well-formed batch, each request checked), the ECDSA still to do
    /// ([`Begun::Sign`]), which needs no state and may run outside whatever serialises calls
    /// on this core. `invoke(cmd, input)` equals `begin(cmd, input)` followed by
    /// [`PendingSignature::finish`]; a shell that runs the signature in parallel must make a
    /// state change (revoke, refresh, rotation, ...) wait for signatures begun before it (see
    /// [`runs_in_parallel`]).
    pub fn begin(&mut self, cmd: u32, input: &[u8]) -> Begun {
        if !runs_in_parallel(cmd) {
            return Begun::Done(self.invoke(cmd, input));
        }
        if let Err(e) = self.ensure_fresh() {
            return Begun::Done(encode_response::<Empty>(Err(&e)));
        }
        let checked = if cmd == CommandId::SignAgentUserOps as u32 {
            decode_request::<SignAgentUserOps>(input)
                .map_err(TaError::from)
                .and_then(|req| self.check_agent_signs(req))
                .map(Pending::Many)
        } else {
            decode_request::<SignAgentUserOp>(input)
                .map_err(TaError::from)
                .and_then(|req| self.check_agent_sign(req))
                .map(Pending::One)
        };
        match checked {
            Ok(pending) => Begun::Sign(PendingSignature(pending)),
            Err(e) => Begun::Done(encode_response::<Empty>(Err(&e))),
        }
    }

    fn jwt_hmac_verify(&mut self, req: JwtHmacVerify) -> Result<VerifiedCredential, TaError> {
        self.verify_credential(&req.jwt, None).map(|(v, _, _)| v)
    }

    fn jwt_rotate_secret(&mut self, req: JwtRotateSecret) -> Result<JwtRotation, TaError> {
        let now = self.clock.now();
        let random = self.random::<40>()?;
        let mut store = self.jwt_store()?.clone();
        let rotation = store.rotate(req.mode, jwt::new_secret(&random, now), now)?;
        let bytes = records::encode(&store)?;
        self.commit(&[WriteOp::Put(records::JWT_STORE_KEY, &bytes)])?;
        self.jwt = Some(store);
        Ok(rotation)
    }

    fn jwt_secret_status(&mut self, _: JwtSecretStatus) -> Result<Vec<JwtSecretInfo>, TaError> {
        Ok(self.jwt_store()?.info())
    }

    fn jwt_sign_payload(&mut self, req: JwtSignPayload) -> Result<AgentCredential, TaError> {
        let b = &req.body;
        let wallet = b.wallet_id;
        self.authorize(&wallet, b, &req.assertion)?;
        jwt::check_ttl(b.ttl_secs)?;
        let mut record = self
            .agent(&wallet, b.agent_index)?
            .ok_or(TaError::AgentNotFound)?;
        if record.revoked_at.is_some() {
            return Err(TaError::AgentRevoked);
        }
        record.generation = record
            .generation
            .checked_add(1)
            .ok_or(TaError::LimitReached)?;
        let public_key = self
            .derived(&wallet, HdPath::agent(b.agent_index))?
            .public_key;
        self.mint_and_store(wallet, b.agent_index, record, public_key, b.ttl_secs)
    }

    fn revoke_agent_key(&mut self, req: RevokeAgentKey) -> Result<AgentState, TaError> {
        let mut record = self
            .agent(&req.wallet_id, req.agent_index)?
            .ok_or(TaError::AgentNotFound)?;
        if record.revoked_at.is_none() {
            record.generation = record.generation.saturating_add(1);
            record.revoked_at = Some(self.clock.now());
            let bytes = records::encode(&record)?;
            self.commit(&[WriteOp::Put(
                &records::agent_key(&req.wallet_id, req.agent_index),
                &bytes,
            )])?;
            self.cache_agent(req.wallet_id, req.agent_index, record.clone());
        }
        Ok(Self::agent_state(req.wallet_id, req.agent_index, &record))
    }

    fn get_agent_state(&mut self, req: GetAgentState) -> Result<AgentState, TaError> {
        let record = self
            .agent(&req.wallet_id, req.agent_index)?
            .ok_or(TaError::AgentNotFound)?;
        Ok(Self::agent_state(req.wallet_id, req.agent_index, &record))
    }

    // ---------------------------------------------------------- operator

    fn operator_record(&mut self) -> Result<Option<OperatorRecord>, TaError> {
        match self.storage.read(records::OPERATOR_KEY)? {
            Some(bytes) => Ok(Some(records::decode(&Zeroizing::new(bytes))?)),
            None => Ok(None),
        }
    }

    /// The operator key's address (cached), `None` while the key does not exist.
    fn operator_address(&mut self) -> Result<Option<[u8; 20]>, TaError> {
        if self.operator_address.is_none() {
            if let Some(record) = self.operator_record()? {
                self.operator_address = Some(Self::operator_signer(&record)?.address);
            }
        }
        Ok(self.operator_address)
    }

    /// A new operator key from the TA's randomness (not yet written).
    fn new_operator_record(&mut self) -> Result<OperatorRecord, TaError> {
        loop {
            let secret = self.random::<32>()?;
            if k256::ecdsa::SigningKey::from_slice(&secret[..]).is_ok() {
                return Ok(OperatorRecord {
                    version: RECORD_VERSION,
                    secret: *secret,
                    created_at: self.clock.now(),
                });
            }
        }
    }

    fn operator_signer(record: &OperatorRecord) -> Result<keys::DerivedKey, TaError> {
        let sk = k256::ecdsa::SigningKey::from_slice(&record.secret)
            .map_err(|_| StorageFault::Corrupt)?;
        Ok(keys::DerivedKey::from_signing_key(sk))
    }

    fn operator_key(&mut self, req: OperatorKey) -> Result<OperatorKeyInfo, TaError> {
        let record = match self.operator_record()? {
            Some(r) => r,
            None if req.create_if_missing => {
                let record = self.new_operator_record()?;
                let bytes = records::encode(&record)?;
                self.commit(&[WriteOp::Put(records::OPERATOR_KEY, &bytes)])?;
                record
            }
            None => return Err(TaError::OperatorKeyMissing),
        };
        let key = Self::operator_signer(&record)?;
        Ok(OperatorKeyInfo {
            address: key.address,
            public_key: key.public_key.to_vec(),
            created_at: record.created_at,
        })
    }

    fn operator_sign_revoke_session(
        &mut self,
        req: OperatorSignRevokeSession,
    ) -> Result<SignedTransaction, TaError> {
        let record = self.operator_record()?.ok_or(TaError::OperatorKeyMissing)?;
        let key = Self::operator_signer(&record)?;
        // The ceilings, then the spend budget, charged durably before anything is signed.
        let cost = kms_proto::operator::check_fees(
            req.gas_limit,
            req.max_fee_per_gas,
            req.max_priority_fee_per_gas,
        )?;
        let bucket = match self.storage.read(operator::SPEND_KEY)? {
            Some(bytes) => records::decode::<operator::SpendBucket>(&bytes)?,
            None => operator::SpendBucket {
                version: RECORD_VERSION,
                ..Default::default()
            },
        };
        let charged = bucket.charge(cost, self.clock.now())?;
        let bytes = records::encode(&charged)?;
        self.commit(&[WriteOp::Put(operator::SPEND_KEY, &bytes)])?;
        let tx = Transaction::Eip1559 {
            chain_id: req.chain_id,
            nonce: req.nonce,
            max_priority_fee_per_gas: req.max_priority_fee_per_gas,
            max_fee_per_gas: req.max_fee_per_gas,
            gas_limit: req.gas_limit,
            to: Some(req.validator.to_vec()),
            value: [0; 32],
            data: eth::revoke_session_calldata(&req.account, &req.agent_key),
            access_list: Vec::new(),
        };
        eth::sign_transaction(&key, &tx)
    }

    // -------------------------------------------------------------- misc

    fn ta_info(&mut self, _: TaInfo) -> Result<TaInfoOutput, TaError> {
        Ok(TaInfoOutput {
            version: String::from(env!("CARGO_PKG_VERSION")),
            protocol_version: PROTOCOL_VERSION,
            export_secrets: cfg!(feature = "export-secrets"),
            test_seed: cfg!(feature = "test-seed") && self.config.test_seed_enabled,
            now: self.clock.now(),
        })
    }
}
