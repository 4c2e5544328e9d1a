//! Payload digests that passkey assertions are bound to.
//!
//! Every passkey-gated command carries a *body* (what is being authorised) and
//! an assertion. The WebAuthn challenge the authenticator signs must be
//!
//! ```text
//! challenge = SHA-256(nonce ‖ payload_digest)
//! payload_digest = SHA-256("agent-key-companion/authz/v1" ‖ command_id (u32 BE) ‖ postcard(body))
//! ```
//!
//! where `nonce` is a one-time value issued by the TA (`GetChallenge`). The TA
//! recomputes the digest from the body it is about to act on, so an assertion
//! made for one payload (or one command) cannot authorise another.

use crate::CommandId;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Domain separation tag of payload digests.
pub const AUTHZ_DOMAIN: &[u8] = b"agent-key-companion/authz/v1";

/// A body whose execution a passkey assertion authorises.
pub trait AuthorizedBody: Serialize {
    /// The command this body belongs to.
    const COMMAND: CommandId;

    /// The payload digest bound into the challenge.
    fn payload_digest(&self) -> [u8; 32] {
        payload_digest(Self::COMMAND, self)
    }
}

/// The payload digest of `body` for `command`.
pub fn payload_digest<B: Serialize + ?Sized>(command: CommandId, body: &B) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(AUTHZ_DOMAIN);
    h.update(command.as_u32().to_be_bytes());
    // Serialising plain data structures to postcard cannot fail; an error
    // here would be a bug in a type definition, so it is folded into the
    // digest as a distinct marker rather than panicking.
    match postcard::to_allocvec(body) {
        Ok(bytes) => h.update(&bytes),
        Err(_) => h.update(b"\xff<unserialisable>"),
    }
    h.finalize().into()
}

/// The WebAuthn challenge for a TA nonce and a payload digest.
pub fn challenge(nonce: &[u8; 32], payload_digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(nonce);
    h.update(payload_digest);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HdPath, SignHashBody, WalletId};

    #[test]
    fn digest_depends_on_every_field_and_the_command() {
        let a = SignHashBody {
            wallet_id: WalletId([1; 16]),
            path: HdPath::OWNER,
            hash: [7; 32],
        };
        let mut b = a.clone();
        b.hash[31] ^= 1;
        let mut c = a.clone();
        c.path.index = 1;
        let mut d = a.clone();
        d.wallet_id.0[0] ^= 1;
        let da = a.payload_digest();
        assert_ne!(da, b.payload_digest());
        assert_ne!(da, c.payload_digest());
        assert_ne!(da, d.payload_digest());
        assert_ne!(da, payload_digest(CommandId::SignMessage, &a));
        assert_eq!(da, payload_digest(CommandId::SignHash, &a));
    }

    #[test]
    fn sign_for_account_digest_binds_chain_account_and_content() {
        use crate::{AccountSignContent, SignForAccountBody};
        let a = SignForAccountBody {
            wallet_id: WalletId([1; 16]),
            path: HdPath::OWNER,
            chain_id: 31337,
            account: [0xAA; 20],
            content: AccountSignContent::Hash([7; 32]),
        };
        let da = a.payload_digest();
        let mut chain = a.clone();
        chain.chain_id = 1;
        let mut account = a.clone();
        account.account[19] ^= 1;
        let mut content = a.clone();
        content.content = AccountSignContent::Hash([8; 32]);
        // The same 32 bytes as a message are another body.
        let mut as_message = a.clone();
        as_message.content = AccountSignContent::Message([7; 32].to_vec());
        for other in [&chain, &account, &content, &as_message] {
            assert_ne!(da, other.payload_digest());
        }
        // Not the SignHash body of the same hash, nor another command's digest.
        let plain = SignHashBody {
            wallet_id: a.wallet_id,
            path: a.path,
            hash: [7; 32],
        };
        assert_ne!(da, plain.payload_digest());
        assert_ne!(da, payload_digest(CommandId::SignHash, &a));
        assert_eq!(da, payload_digest(CommandId::SignForAccount, &a));
    }

    #[test]
    fn eip7702_delegation_digest_binds_every_field() {
        use crate::Eip7702DelegationBody;
        let a = Eip7702DelegationBody {
            wallet_id: WalletId([1; 16]),
            chain_id: 31337,
            delegate: [0xDE; 20],
            nonce: 7,
            user_op_hash: Some([9; 32]),
        };
        let da = a.payload_digest();
        let mut wallet = a.clone();
        wallet.wallet_id.0[15] ^= 1;
        let mut chain = a.clone();
        chain.chain_id = 1;
        let mut delegate = a.clone();
        delegate.delegate[0] ^= 1;
        let mut nonce = a.clone();
        nonce.nonce = 8;
        let mut op = a.clone();
        op.user_op_hash = Some([10; 32]);
        // Without the userOpHash is another body than with it.
        let mut no_op = a.clone();
        no_op.user_op_hash = None;
        for other in [&wallet, &chain, &delegate, &nonce, &op, &no_op] {
            assert_ne!(da, other.payload_digest());
        }
        // Not the SignHash body of the same userOpHash, nor another command's digest.
        let plain = SignHashBody {
            wallet_id: a.wallet_id,
            path: HdPath::OWNER,
            hash: [9; 32],
        };
        assert_ne!(da, plain.payload_digest());
        assert_ne!(da, payload_digest(CommandId::SignHash, &a));
        assert_eq!(da, payload_digest(CommandId::SignEip7702Delegation, &a));
    }

    #[test]
    fn challenge_binds_nonce_and_digest() {
        let n1 = [1u8; 32];
        let n2 = [2u8; 32];
        let d = [3u8; 32];
        assert_ne!(challenge(&n1, &d), challenge(&n2, &d));
        assert_ne!(challenge(&n1, &d), challenge(&n1, &n2));
        // Known answer: SHA-256 of 64 bytes (32×0x01 ‖ 32×0x03).
        let mut h = Sha256::new();
        h.update([1u8; 32]);
        h.update([3u8; 32]);
        let want: [u8; 32] = h.finalize().into();
        assert_eq!(challenge(&n1, &d), want);
    }
}
