//! A TA core holding a wallet (the anvil mnemonic) and one agent with its
//! credential, for the properties that need a live TA.

#[allow(unreachable_pub, missing_docs)]
#[path = "../../../ta/core/tests/common/mod.rs"]
mod common;

use std::cell::RefCell;

use common::*;
use kms_proto::*;

/// The fixture: a TA, its wallet and agent 0's JWT.
pub struct Fixture {
    h: Harness,
    /// The wallet.
    pub wallet: WalletId,
    /// Agent 0's credential.
    pub jwt: String,
}

impl Fixture {
    /// A fresh fixture.
    pub fn new() -> Self {
        let mut h = Harness::new();
        let mut pk = SoftPasskey::new(1);
        let w = seed_anvil_wallet(&mut h, &pk);
        let cred = create_agent(&mut h, &mut pk, w.wallet_id, 0, 3600).expect("agent");
        Fixture {
            h,
            wallet: w.wallet_id,
            jwt: cred.to_jwt(),
        }
    }

    /// Whether the TA's `JwtHmacVerify` accepts `token`.
    pub fn verify(&mut self, token: &str) -> bool {
        let out = self.h.ta.invoke(
            JwtHmacVerify::ID.as_u32(),
            &encode_request(&JwtHmacVerify {
                jwt: token.to_owned(),
            }),
        );
        matches!(decode_response::<VerifiedCredential>(&out), Ok(Ok(_)))
    }

    /// Invoke a command chosen by `data` on the rest of `data`; check the
    /// response's shape and that no proof-gated command succeeded.
    pub fn invoke_checked(&mut self, data: &[u8]) {
        if data.len() < 2 {
            return;
        }
        let cmd = if data[0] & 0x80 == 0 {
            CommandId::ALL[usize::from(data[1]) % CommandId::ALL.len()].as_u32()
        } else if data.len() >= 5 {
            u32::from_le_bytes([data[1], data[2], data[3], data[4]])
        } else {
            u32::from(data[1])
        };
        let input = &data[2.min(data.len())..];
        let out = self.h.ta.invoke(cmd, input);
        assert_eq!(out.first(), Some(&PROTOCOL_VERSION), "malformed response");
        // [version, status (0 = ok, 1 = error), body]
        let ok = out.get(1) == Some(&0);
        if !ok {
            assert!(
                matches!(decode_response::<Empty>(&out), Ok(Err(_))),
                "an error response that does not decode as a TaError"
            );
        }
        let Some(id) = CommandId::from_u32(cmd) else {
            assert!(!ok, "unknown command {cmd} succeeded");
            return;
        };
        match id {
            // Each needs a passkey assertion over a TA nonce: random bytes
            // cannot carry one.
            CommandId::RemoveWallet
            | CommandId::DeriveAddress
            | CommandId::SignTransaction
            | CommandId::SignMessage
            | CommandId::SignHash
            | CommandId::SignForAccount
            | CommandId::SignEip7702Delegation
            | CommandId::GetPublicKey
            | CommandId::ChangePasskey
            | CommandId::CreateAgentKey
            | CommandId::JwtSignPayload
            | CommandId::JwtHmacSign
            | CommandId::ExportPrivateKey => {
                assert!(!ok, "{} succeeded without a proof", id.name());
            }
            CommandId::SignAgentUserOp if ok => {
                let req = decode_request::<SignAgentUserOp>(input).expect("it decoded");
                assert_eq!(
                    req.jwt, self.jwt,
                    "signed for a credential the TA never issued"
                );
            }
            CommandId::SignAgentUserOps if ok => {
                let req = decode_request::<SignAgentUserOps>(input).expect("it decoded");
                let answers = decode_response::<Vec<Result<AgentSignature, TaError>>>(&out)
                    .expect("a batch answer decodes")
                    .expect("it succeeded");
                assert_eq!(answers.len(), req.requests.len(), "one answer per request");
                for (r, a) in req.requests.iter().zip(&answers) {
                    if a.is_ok() {
                        assert_eq!(
                            r.jwt, self.jwt,
                            "signed for a credential the TA never issued"
                        );
                    }
                }
            }
            _ => {}
        }
    }
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

thread_local! {
    static VERIFY: RefCell<Option<Fixture>> = const { RefCell::new(None) };
    static INVOKE: RefCell<Option<Fixture>> = const { RefCell::new(None) };
}

/// Run `f` on this thread's verification fixture (created once; never
/// changed by `f`, so its token stays valid).
pub fn with_fixture<R>(f: impl FnOnce(&mut Fixture) -> R) -> R {
    VERIFY.with(|c| f(c.borrow_mut().get_or_insert_with(Fixture::new)))
}

/// Run `f` on this thread's invocation fixture (arbitrary commands may
/// change its state).
pub fn with_invoke_fixture<R>(f: impl FnOnce(&mut Fixture) -> R) -> R {
    INVOKE.with(|c| f(c.borrow_mut().get_or_insert_with(Fixture::new)))
}
