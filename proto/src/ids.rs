//! Command ids.

use core::fmt;

/// The numeric id of each TA command.
///
/// Agent commands keep the upstream numbering (11–16) so that both sides of
/// an upstream-compatible deployment read the same numbers. Wallet commands
/// are below 11; additions take ids from 17 up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum CommandId {
    /// Create a wallet from TA randomness, bound to a passkey public key.
    CreateWallet = 0,
    /// Remove a wallet (passkey assertion).
    RemoveWallet = 1,
    /// Derive an address at `m/44'/60'/0'/c/i` (passkey assertion).
    DeriveAddress = 2,
    /// Sign an EIP-1559 or legacy EIP-155 transaction (passkey assertion).
    SignTransaction = 3,
    /// Sign an EIP-191 personal message (passkey assertion).
    SignMessage = 4,
    /// Sign a raw 32-byte digest (passkey assertion).
    SignHash = 5,
    /// Export a private key: only in `export-secrets` builds, and even then
    /// only with a passkey assertion.
    ExportPrivateKey = 6,
    /// Get the public key at a path (passkey assertion).
    GetPublicKey = 7,
    /// Replace the bound passkey (assertion by the current passkey).
    ChangePasskey = 8,
    /// Issue a one-time nonce for a passkey challenge.
    GetChallenge = 9,
    /// Public facts about a wallet (owner address, bound passkey).
    GetWalletInfo = 10,
    /// Derive an agent key and mint its first credential (passkey assertion).
    CreateAgentKey = 11,
    /// Sign a userOpHash with an agent key (JWT proof).
    SignAgentUserOp = 12,
    /// Reserved: never a MAC oracle; always answers "unsupported".
    JwtHmacSign = 13,
    /// Verify an agent credential; never returns a MAC.
    JwtHmacVerify = 14,
    /// Rotate the JWT HMAC secrets (normal, forced, or purge expired).
    JwtRotateSecret = 15,
    /// Re-issue an agent credential, superseding the previous one (passkey
    /// assertion bound to that agent).
    JwtSignPayload = 16,
    /// Revoke an agent key: bumps its generation, refuses it from then on.
    RevokeAgentKey = 17,
    /// Generation and status of an agent key.
    GetAgentState = 18,
    /// Kids of the JWT secret store with their status (never the secrets).
    JwtSecretStatus = 19,
    /// The operator key's address (created on first use if asked).
    OperatorKey = 20,
    /// Sign a `revokeSession` transaction with the operator key.
    OperatorSignRevokeSession = 21,
    /// Version and build facts of the TA.
    TaInfo = 22,
    /// Sign a message or a hash for ERC-1271 verification by the owner's smart account: the
    /// ERC-7739 `PersonalSign` digest in the `AgentAccount` EIP-712 domain of one account on
    /// one chain, signed raw (passkey assertion).
    SignForAccount = 23,
    /// Accept a restored (older) sealed state: re-seal it with a version past the TA's
    /// monotonic counter, so the TA serves it again. Revoked agents and superseded credentials
    /// of the restored state come back; see `kms_proto::AcceptRestore`.
    AcceptRestore = 24,
    /// Anchor the host's audit log: fold the hashes of its new rows into the TA's anchor and
    /// sign the checkpoint with the TA's audit key (see [`crate::audit`]).
    AuditCheckpoint = 25,
    /// The audit key's public key and the TA's last checkpoint (read-only).
    AuditAnchor = 26,
    /// Sign an EIP-7702 authorisation delegating the owner's EOA to an account implementation,
    /// and optionally the first UserOperation hash of the delegated account, with the owner key
    /// in one passkey ceremony (passkey assertion).
    SignEip7702Delegation = 27,
    /// Several `SignAgentUserOp` requests in one call: each checked and signed as alone, each
    /// with its own answer (one world switch, or one socket exchange, for all of them).
    SignAgentUserOps = 28,
    /// Test only: seed a wallet from a given mnemonic. Exists in the
    /// simulator only; never in an OP-TEE build.
    SeedWalletForTest = 0x7E57,
}

impl CommandId {
    /// Every command id, in numeric order.
    pub const ALL: [CommandId; 30] = [
        CommandId::CreateWallet,
        CommandId::RemoveWallet,
        CommandId::DeriveAddress,
        CommandId::SignTransaction,
        CommandId::SignMessage,
        CommandId::SignHash,
        CommandId::ExportPrivateKey,
        CommandId::GetPublicKey,
        CommandId::ChangePasskey,
        CommandId::GetChallenge,
        CommandId::GetWalletInfo,
        CommandId::CreateAgentKey,
        CommandId::SignAgentUserOp,
        CommandId::JwtHmacSign,
        CommandId::JwtHmacVerify,
        CommandId::JwtRotateSecret,
        CommandId::JwtSignPayload,
        CommandId::RevokeAgentKey,
        CommandId::GetAgentState,
        CommandId::JwtSecretStatus,
        CommandId::OperatorKey,
        CommandId::OperatorSignRevokeSession,
        CommandId::TaInfo,
        CommandId::SignForAccount,
        CommandId::AcceptRestore,
        CommandId::AuditCheckpoint,
        CommandId::AuditAnchor,
        CommandId::SignEip7702Delegation,
        CommandId::SignAgentUserOps,
        CommandId::SeedWalletForTest,
    ];

    /// The wire value.
    pub const fn as_u32(self) -> u32 {
        self as u32
    }

    /// The command with this wire value, if any.
    pub fn from_u32(v: u32) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.as_u32() == v)
    }

    /// The command's name, as used in logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            CommandId::CreateWallet => "CreateWallet",
            CommandId::RemoveWallet => "RemoveWallet",
            CommandId::DeriveAddress => "DeriveAddress",
            CommandId::SignTransaction => "SignTransaction",
            CommandId::SignMessage => "SignMessage",
            CommandId::SignHash => "SignHash",
            CommandId::ExportPrivateKey => "ExportPrivateKey",
            CommandId::GetPublicKey => "GetPublicKey",
            CommandId::ChangePasskey => "ChangePasskey",
            CommandId::GetChallenge => "GetChallenge",
            CommandId::GetWalletInfo => "GetWalletInfo",
            CommandId::CreateAgentKey => "CreateAgentKey",
            CommandId::SignAgentUserOp => "SignAgentUserOp",
            CommandId::JwtHmacSign => "JwtHmacSign",
            CommandId::JwtHmacVerify => "JwtHmacVerify",
            CommandId::JwtRotateSecret => "JwtRotateSecret",
            CommandId::JwtSignPayload => "JwtSignPayload",
            CommandId::RevokeAgentKey => "RevokeAgentKey",
            CommandId::GetAgentState => "GetAgentState",
            CommandId::JwtSecretStatus => "JwtSecretStatus",
            CommandId::OperatorKey => "OperatorKey",
            CommandId::OperatorSignRevokeSession => "OperatorSignRevokeSession",
            CommandId::TaInfo => "TaInfo",
            CommandId::SignForAccount => "SignForAccount",
            CommandId::AcceptRestore => "AcceptRestore",
            CommandId::AuditCheckpoint => "AuditCheckpoint",
            CommandId::AuditAnchor => "AuditAnchor",
            CommandId::SignEip7702Delegation => "SignEip7702Delegation",
            CommandId::SignAgentUserOps => "SignAgentUserOps",
            CommandId::SeedWalletForTest => "SeedWalletForTest",
        }
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.as_u32())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_commands_keep_upstream_numbers() {
        assert_eq!(CommandId::CreateAgentKey.as_u32(), 11);
        assert_eq!(CommandId::SignAgentUserOp.as_u32(), 12);
        assert_eq!(CommandId::JwtHmacSign.as_u32(), 13);
        assert_eq!(CommandId::JwtHmacVerify.as_u32(), 14);
        assert_eq!(CommandId::JwtRotateSecret.as_u32(), 15);
        assert_eq!(CommandId::JwtSignPayload.as_u32(), 16);
    }

    #[test]
    fn wallet_commands_are_below_11_and_additions_from_17() {
        for c in CommandId::ALL {
            let v = c.as_u32();
            let is_agent = (11..=16).contains(&v);
            let is_wallet = matches!(
                c,
                CommandId::CreateWallet
                    | CommandId::RemoveWallet
                    | CommandId::DeriveAddress
                    | CommandId::SignTransaction
                    | CommandId::SignMessage
                    | CommandId::SignHash
                    | CommandId::ExportPrivateKey
                    | CommandId::GetPublicKey
                    | CommandId::ChangePasskey
                    | CommandId::GetChallenge
                    | CommandId::GetWalletInfo
            );
            if is_wallet {
                assert!(v < 11, "{c}");
            } else if !is_agent {
                assert!(v >= 17, "{c}");
            }
        }
    }

    #[test]
    fn all_is_in_numeric_order_and_sign_for_account_is_23() {
        for w in CommandId::ALL.windows(2) {
            assert!(w[0].as_u32() < w[1].as_u32(), "{} before {}", w[0], w[1]);
        }
        assert_eq!(CommandId::SignForAccount.as_u32(), 23);
        assert_eq!(CommandId::from_u32(23), Some(CommandId::SignForAccount));
        assert_eq!(CommandId::SignForAccount.name(), "SignForAccount");
    }

    #[test]
    fn accept_restore_is_24() {
        assert_eq!(CommandId::AcceptRestore.as_u32(), 24);
        assert_eq!(CommandId::from_u32(24), Some(CommandId::AcceptRestore));
        assert_eq!(CommandId::AcceptRestore.name(), "AcceptRestore");
    }

    #[test]
    fn audit_commands_are_25_and_26() {
        assert_eq!(CommandId::from_u32(25), Some(CommandId::AuditCheckpoint));
        assert_eq!(CommandId::from_u32(26), Some(CommandId::AuditAnchor));
        assert_eq!(CommandId::AuditCheckpoint.name(), "AuditCheckpoint");
        assert_eq!(CommandId::AuditAnchor.name(), "AuditAnchor");
    }

    #[test]
    fn sign_eip7702_delegation_is_27() {
        assert_eq!(CommandId::SignEip7702Delegation.as_u32(), 27);
        assert_eq!(
            CommandId::from_u32(27),
            Some(CommandId::SignEip7702Delegation)
        );
        assert_eq!(
            CommandId::SignEip7702Delegation.name(),
            "SignEip7702Delegation"
        );
    }

    #[test]
    fn sign_agent_user_ops_is_28() {
        assert_eq!(CommandId::SignAgentUserOps.as_u32(), 28);
        assert_eq!(CommandId::from_u32(28), Some(CommandId::SignAgentUserOps));
        assert_eq!(CommandId::SignAgentUserOps.name(), "SignAgentUserOps");
        // The last real command; the test-only id stays last.
        assert_eq!(
            CommandId::ALL[CommandId::ALL.len() - 2],
            CommandId::SignAgentUserOps
        );
    }

    #[test]
    fn ids_are_unique_and_round_trip() {
        for (i, a) in CommandId::ALL.iter().enumerate() {
            assert_eq!(CommandId::from_u32(a.as_u32()), Some(*a));
            for b in &CommandId::ALL[i + 1..] {
                assert_ne!(a.as_u32(), b.as_u32());
            }
        }
        assert_eq!(CommandId::from_u32(999), None);
    }
}
