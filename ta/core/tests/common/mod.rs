//! Test harness for the TA core: in-memory sealed storage, deterministic
//! randomness, a settable clock, and a software passkey that makes real
//! P-256 WebAuthn assertions. Every call goes through the byte protocol.
#![allow(dead_code)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use kms_proto::authz::{self, AuthorizedBody};
use kms_proto::*;
use kms_ta::{
    Clock, Config, Entropy, EntropyError, MonotonicCounter, SealedStorage, TaCore, WriteOp,
};
use p256::ecdsa::signature::Signer;
use sha2::{Digest, Sha256};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

/// Anvil's test mnemonic (docs/ARCHITECTURE.md#key-derivation).
pub const ANVIL_MNEMONIC: &str = "test test test test test test test test test test test junk";
pub const RP_ID: &str = "localhost";

#[derive(Clone, Default)]
pub struct MemStorage {
    pub map: Rc<RefCell<BTreeMap<String, Vec<u8>>>>,
    pub reads: Rc<RefCell<Vec<String>>>,
}

impl SealedStorage for MemStorage {
    fn read(&mut self, key: &str) -> Result<Option<Vec<u8>>, StorageFault> {
        self.reads.borrow_mut().push(key.to_string());
        Ok(self.map.borrow().get(key).cloned())
    }
    fn write(&mut self, ops: &[WriteOp<'_>]) -> Result<(), StorageFault> {
        let mut m = self.map.borrow_mut();
        for op in ops {
            match op {
                WriteOp::Put(k, v) => {
                    m.insert(k.to_string(), v.to_vec());
                }
                WriteOp::Delete(k) => {
                    m.remove(*k);
                }
            }
        }
        Ok(())
    }
}

/// An in-memory monotonic counter (the rollback counter kept outside the sealed state), with
/// switches to make its operations fail.
#[derive(Clone, Default)]
pub struct MemCounter {
    pub value: Rc<Cell<u64>>,
    pub fail_reads: Rc<Cell<bool>>,
    pub fail_advances: Rc<Cell<bool>>,
}

impl MonotonicCounter for MemCounter {
    fn read(&mut self) -> Result<u64, StorageFault> {
        if self.fail_reads.get() {
            return Err(StorageFault::Io);
        }
        Ok(self.value.get())
    }
    fn advance_to(&mut self, value: u64) -> Result<(), StorageFault> {
        if self.fail_advances.get() {
            return Err(StorageFault::Io);
        }
        self.value.set(self.value.get().max(value));
        Ok(())
    }
}

/// SHA-256 counter DRBG: deterministic, distinct outputs.
pub struct TestEntropy {
    seed: u64,
    counter: u64,
}

impl Entropy for TestEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        for chunk in buf.chunks_mut(32) {
            self.counter += 1;
            let mut h = Sha256::new();
            h.update(self.seed.to_be_bytes());
            h.update(self.counter.to_be_bytes());
            let block = h.finalize();
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
        Ok(())
    }
}

#[derive(Clone)]
pub struct TestClock(pub Rc<Cell<u64>>);

impl Clock for TestClock {
    fn now(&self) -> u64 {
        self.0.get()
    }
}

pub type Core = TaCore<MemStorage, TestEntropy, TestClock, MemCounter>;

/// A TA core plus handles on its storage and clock.
pub struct Harness {
    pub ta: Core,
    pub storage: MemStorage,
    pub counter: MemCounter,
    pub clock: Rc<Cell<u64>>,
    seed: u64,
}

pub const T0: u64 = 1_800_000_000;

impl Harness {
    pub fn new() -> Self {
        Self::with_seed(1)
    }

    pub fn with_seed(seed: u64) -> Self {
        let storage = MemStorage::default();
        let counter = MemCounter::default();
        let clock = Rc::new(Cell::new(T0));
        let ta = TaCore::new(
            storage.clone(),
            TestEntropy { seed, counter: 0 },
            TestClock(clock.clone()),
            counter.clone(),
            Config {
                test_seed_enabled: true,
            },
        );
        Harness {
            ta,
            storage,
            counter,
            clock,
            seed,
        }
    }

    /// A fresh core over the same storage and clock (a TA restart).
    pub fn restart(&mut self) {
        self.seed += 1000;
        self.ta = TaCore::new(
            self.storage.clone(),
            TestEntropy {
                seed: self.seed,
                counter: 0,
            },
            TestClock(self.clock.clone()),
            self.counter.clone(),
            Config {
                test_seed_enabled: true,
            },
        );
    }

    pub fn advance(&self, secs: u64) {
        self.clock.set(self.clock.get() + secs);
    }

    /// Call a command through the byte protocol.
    pub fn call<C: Command>(&mut self, req: &C) -> Result<C::Output, TaError> {
        let bytes = self.ta.invoke(C::ID.as_u32(), &encode_request(req));
        decode_response::<C::Output>(&bytes).expect("TA answered well-formed bytes")
    }

    pub fn nonce(&mut self, wallet: WalletId) -> [u8; 32] {
        self.call(&GetChallenge { wallet_id: wallet })
            .expect("challenge")
            .nonce
    }
}

/// A software passkey: a P-256 key and an authenticator counter.
pub struct SoftPasskey {
    pub key: p256::ecdsa::SigningKey,
    pub rp_id: String,
    pub counter: u32,
}

/// Knobs for building deliberately bad assertions.
#[derive(Clone)]
pub struct AssertOpts {
    pub flags: u8,
    pub rp_id: Option<String>,
    pub typ: &'static str,
}

impl Default for AssertOpts {
    fn default() -> Self {
        AssertOpts {
            flags: 0x05,
            rp_id: None,
            typ: "webauthn.get",
        }
    }
}

impl SoftPasskey {
    pub fn new(seed: u8) -> Self {
        let mut bytes = [seed; 32];
        bytes[0] = 1;
        SoftPasskey {
            key: p256::ecdsa::SigningKey::from_slice(&bytes).unwrap(),
            rp_id: RP_ID.into(),
            counter: 0,
        }
    }

    pub fn public_key(&self) -> Vec<u8> {
        self.key
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec()
    }

    /// An assertion over an explicit challenge.
    pub fn assert_challenge(
        &mut self,
        challenge: &[u8; 32],
        opts: &AssertOpts,
    ) -> PasskeyAssertion {
        self.counter += 1;
        let rp = opts.rp_id.clone().unwrap_or_else(|| self.rp_id.clone());
        let mut ad = Sha256::digest(rp.as_bytes()).to_vec();
        ad.push(opts.flags);
        ad.extend_from_slice(&self.counter.to_be_bytes());
        let cdj = format!(
            r#"{{"type":"{}","challenge":"{}","origin":"http://localhost:3000","crossOrigin":false}}"#,
            opts.typ,
            URL_SAFE_NO_PAD.encode(challenge)
        )
        .into_bytes();
        let mut signed = ad.clone();
        signed.extend_from_slice(&Sha256::digest(&cdj));
        let sig: p256::ecdsa::Signature = self.key.sign(&signed);
        PasskeyAssertion {
            authenticator_data: ad,
            client_data_json: cdj,
            signature: sig.to_der().as_bytes().to_vec(),
        }
    }

    /// A fresh nonce from the TA, bound to `body`.
    pub fn authorize<B: AuthorizedBody>(
        &mut self,
        h: &mut Harness,
        wallet: WalletId,
        body: &B,
    ) -> PasskeyAssertion {
        self.authorize_with(h, wallet, body, &AssertOpts::default())
    }

    pub fn authorize_with<B: AuthorizedBody>(
        &mut self,
        h: &mut Harness,
        wallet: WalletId,
        body: &B,
        opts: &AssertOpts,
    ) -> PasskeyAssertion {
        let nonce = h.nonce(wallet);
        self.assert_challenge(&authz::challenge(&nonce, &body.payload_digest()), opts)
    }
}

/// Create a wallet bound to `pk`.
pub fn create_wallet(h: &mut Harness, pk: &SoftPasskey) -> CreateWalletOutput {
    h.call(&CreateWallet {
        passkey_public_key: pk.public_key(),
        rp_id: pk.rp_id.clone(),
    })
    .expect("create wallet")
}

/// Seed the anvil mnemonic wallet bound to `pk`.
pub fn seed_anvil_wallet(h: &mut Harness, pk: &SoftPasskey) -> CreateWalletOutput {
    h.call(&SeedWalletForTest {
        mnemonic: ANVIL_MNEMONIC.into(),
        passkey_public_key: pk.public_key(),
        rp_id: pk.rp_id.clone(),
    })
    .expect("seed wallet")
}

/// Mint agent `index` with a fresh assertion.
pub fn create_agent(
    h: &mut Harness,
    pk: &mut SoftPasskey,
    wallet: WalletId,
    index: u32,
    ttl: u64,
) -> Result<AgentCredential, TaError> {
    let body = MintAgentBody {
        wallet_id: wallet,
        label: format!("agent-{index}"),
        ttl_secs: ttl,
    };
    let assertion = pk.authorize(h, wallet, &body);
    h.call(&CreateAgentKey {
        agent_index: index,
        body,
        assertion,
    })
}

/// Refresh agent `index` with a fresh assertion.
pub fn refresh_agent(
    h: &mut Harness,
    pk: &mut SoftPasskey,
    wallet: WalletId,
    index: u32,
    ttl: u64,
) -> Result<AgentCredential, TaError> {
    let body = RefreshAgentBody {
        wallet_id: wallet,
        agent_index: index,
        ttl_secs: ttl,
    };
    let assertion = pk.authorize(h, wallet, &body);
    h.call(&JwtSignPayload { body, assertion })
}

pub fn sign_op(
    h: &mut Harness,
    wallet: WalletId,
    index: u32,
    jwt: &str,
    hash: [u8; 32],
    account: [u8; 20],
) -> Result<AgentSignature, TaError> {
    h.call(&SignAgentUserOp {
        wallet_id: wallet,
        agent_index: index,
        jwt: jwt.to_string(),
        user_op_hash: hash,
        account,
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Recover the signer address of a 65-byte `r ‖ s ‖ v` over `digest`.
pub fn recover(digest: &[u8; 32], rsv: &[u8]) -> [u8; 20] {
    let sig = k256::ecdsa::Signature::from_slice(&rsv[..64]).unwrap();
    let recid = k256::ecdsa::RecoveryId::from_byte(rsv[64] - 27).unwrap();
    let vk = k256::ecdsa::VerifyingKey::recover_from_prehash(digest, &sig, recid).unwrap();
    let point = vk.to_encoded_point(false);
    let h = alloy_primitives::keccak256(&point.as_bytes()[1..]);
    h[12..].try_into().unwrap()
}

pub fn eip191(msg: &[u8]) -> [u8; 32] {
    let mut buf = format!("\x19Ethereum Signed Message:\n{}", msg.len()).into_bytes();
    buf.extend_from_slice(msg);
    alloy_primitives::keccak256(&buf).0
}

pub fn checksum(addr: &[u8; 20]) -> String {
    alloy_primitives::Address::from(*addr).to_checksum(None)
}
