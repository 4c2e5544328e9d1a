//! One request type per command, each naming its output.

use crate::authz::AuthorizedBody;
use crate::types::*;
use crate::{Command, CommandId};
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

macro_rules! command {
    ($req:ty => $out:ty, $id:ident) => {
        impl Command for $req {
            const ID: CommandId = CommandId::$id;
            type Output = $out;
        }
    };
}

macro_rules! authorized {
    ($body:ty, $id:ident) => {
        impl AuthorizedBody for $body {
            const COMMAND: CommandId = CommandId::$id;
        }
    };
}

/// A passkey-gated request: the body being authorised and the assertion
/// whose challenge is bound to it (see [`crate::authz`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorized<B> {
    /// What is being authorised.
    pub body: B,
    /// The passkey assertion.
    pub assertion: PasskeyAssertion,
}

// ---------------------------------------------------------------- wallets

/// Create a wallet from TA randomness and bind a passkey to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateWallet {
    /// The passkey's P-256 public key, SEC1 uncompressed (65 bytes,
    /// `04 ‖ x ‖ y`); must be a point on the curve.
    pub passkey_public_key: Vec<u8>,
    /// The WebAuthn relying party id the passkey is scoped to; the TA keeps
    /// SHA-256 of it and checks every assertion's rpIdHash against it.
    pub rp_id: String,
}

/// The new wallet.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateWalletOutput {
    /// Its id.
    pub wallet_id: WalletId,
    /// The owner address `m/44'/60'/0'/0/0`.
    pub owner: AddressInfo,
    /// The 24-word mnemonic: `Some` only from a TA built with
    /// `export-secrets`; always `None` otherwise.
    pub mnemonic: Option<String>,
}

impl core::fmt::Debug for CreateWalletOutput {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CreateWalletOutput")
            .field("wallet_id", &self.wallet_id)
            .field("owner", &self.owner)
            .field("mnemonic", &self.mnemonic.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}
command!(CreateWallet => CreateWalletOutput, CreateWallet);

/// Body of [`RemoveWallet`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveWalletBody {
    /// The wallet to remove.
    pub wallet_id: WalletId,
}
authorized!(RemoveWalletBody, RemoveWallet);
/// Remove a wallet and everything derived from it.
pub type RemoveWallet = Authorized<RemoveWalletBody>;
command!(RemoveWallet => Empty, RemoveWallet);

/// Body of [`DeriveAddress`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeriveAddressBody {
    /// Wallet.
    pub wallet_id: WalletId,
    /// Path.
    pub path: HdPath,
}
authorized!(DeriveAddressBody, DeriveAddress);
/// Derive the address at a path.
pub type DeriveAddress = Authorized<DeriveAddressBody>;
command!(DeriveAddress => AddressInfo, DeriveAddress);

/// Body of [`GetPublicKey`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetPublicKeyBody {
    /// Wallet.
    pub wallet_id: WalletId,
    /// Path.
    pub path: HdPath,
}
authorized!(GetPublicKeyBody, GetPublicKey);
/// Get the public key at a path.
pub type GetPublicKey = Authorized<GetPublicKeyBody>;
command!(GetPublicKey => AddressInfo, GetPublicKey);

/// Body of [`SignTransaction`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignTransactionBody {
    /// Wallet.
    pub wallet_id: WalletId,
    /// Signing key path.
    pub path: HdPath,
    /// The transaction.
    pub transaction: Transaction,
}
authorized!(SignTransactionBody, SignTransaction);
/// Sign a transaction.
pub type SignTransaction = Authorized<SignTransactionBody>;
command!(SignTransaction => SignedTransaction, SignTransaction);

/// Body of [`SignMessage`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignMessageBody {
    /// Wallet.
    pub wallet_id: WalletId,
    /// Signing key path.
    pub path: HdPath,
    /// The message; the TA signs its EIP-191 personal-message hash.
    pub message: Vec<u8>,
}
authorized!(SignMessageBody, SignMessage);
/// Sign an EIP-191 personal message.
pub type SignMessage = Authorized<SignMessageBody>;
command!(SignMessage => Signature65, SignMessage);

/// Body of [`SignHash`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignHashBody {
    /// Wallet.
    pub wallet_id: WalletId,
    /// Signing key path.
    pub path: HdPath,
    /// The digest, signed as is.
    pub hash: B256,
}
authorized!(SignHashBody, SignHash);
/// Sign a raw 32-byte digest.
pub type SignHash = Authorized<SignHashBody>;
command!(SignHash => Signature65, SignHash);

/// EIP-712 domain `name` of the project's smart account (`AgentAccount`).
pub const AGENT_ACCOUNT_EIP712_NAME: &str = "AgentAccount";
/// EIP-712 domain `version` of the project's smart account (`AgentAccount`).
pub const AGENT_ACCOUNT_EIP712_VERSION: &str = "1";

/// What [`SignForAccount`] wraps: the `hash` a dapp hands to the account's
/// `isValidSignature(hash, signature)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountSignContent {
    /// A personal message: `hash` is its EIP-191 hash,
    /// `keccak256("\x19Ethereum Signed Message:\n" ‖ len ‖ message)` (the TA refuses messages
    /// longer than `SignMessage` accepts).
    Message(Vec<u8>),
    /// `hash` itself (e.g. an EIP-712 digest the dapp computed).
    Hash(B256),
}

/// Body of [`SignForAccount`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignForAccountBody {
    /// Wallet.
    pub wallet_id: WalletId,
    /// Signing key path (the account's owner key).
    pub path: HdPath,
    /// The chain the account lives on (the domain's `chainId`).
    pub chain_id: u64,
    /// The smart account (the domain's `verifyingContract`).
    pub account: Address,
    /// The message or hash.
    pub content: AccountSignContent,
}
authorized!(SignForAccountBody, SignForAccount);
/// Sign for ERC-1271 verification by one `AgentAccount` on one chain (ERC-7739, the
/// `PersonalSign` nested form). The TA signs, raw (RFC 6979, low s, `v` = 27/28),
///
/// ```text
/// digest = keccak256(0x19 ‖ 0x01 ‖ domainSeparator ‖ keccak256(PERSONAL_SIGN_TYPEHASH ‖ hash))
/// domainSeparator = keccak256(keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
///                             ‖ keccak256("AgentAccount") ‖ keccak256("1")
///                             ‖ uint256(chain_id) ‖ uint256(uint160(account)))
/// PERSONAL_SIGN_TYPEHASH = keccak256("PersonalSign(bytes prefixed)")
/// ```
///
/// with `hash` from [`AccountSignContent`]: exactly what OpenZeppelin's `ERC7739`
/// `isValidSignature(hash, signature)` recovers for that account. The result is valid for that
/// account on that chain only, and is never a UserOperation signature.
pub type SignForAccount = Authorized<SignForAccountBody>;
command!(SignForAccount => Signature65, SignForAccount);

/// Body of [`SignEip7702Delegation`]. Every field is bound into the passkey challenge (see
/// [`crate::authz`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eip7702DelegationBody {
    /// Wallet; the TA signs with its owner key `m/44'/60'/0'/0/0` ([`HdPath::OWNER`]), the EOA
    /// being delegated (the authorisation's authority).
    pub wallet_id: WalletId,
    /// The chain the authorisation is valid on. Must not be 0 (EIP-7702 accepts chain id 0 on
    /// every chain): the TA refuses it with [`crate::TaError::InvalidAuthorization`].
    pub chain_id: u64,
    /// The account implementation the EOA's code is delegated to (the authorisation's
    /// `address`).
    pub delegate: Address,
    /// The EOA's account nonce at the time the authorisation is processed. Must be below
    /// `u64::MAX` (EIP-7702 bounds it to `2^64 - 2`): the TA refuses `u64::MAX` with
    /// [`crate::TaError::InvalidAuthorization`].
    pub nonce: u64,
    /// The ERC-4337 userOpHash of the first UserOperation the delegated account sends, if the
    /// owner signs it in the same ceremony: the TA then also signs it raw (no prefix) with the
    /// owner key.
    pub user_op_hash: Option<B256>,
}
authorized!(Eip7702DelegationBody, SignEip7702Delegation);
/// Delegate the owner's EOA with an EIP-7702 authorisation (command id 27), and optionally sign
/// the first UserOperation of the delegated account, in one passkey ceremony (one assertion
/// authorises one command). The TA signs, always with the owner key ([`HdPath::OWNER`]), raw
/// (RFC 6979, low s, `v` = 27/28):
///
/// ```text
/// authorization = sign(keccak256(0x05 ‖ rlp([chain_id, delegate, nonce])))   // EIP-7702 MAGIC = 0x05
/// user_op       = sign(user_op_hash)                                          // when asked
/// ```
///
/// A delegation hands the EOA's code, and so everything the EOA holds, to `delegate` on that
/// chain until it is replaced: that is why the command is passkey-gated and every field of
/// [`Eip7702DelegationBody`] is bound into the challenge. Chain id 0 (valid on every chain) and
/// nonce `u64::MAX` are refused with [`crate::TaError::InvalidAuthorization`] before the
/// assertion is checked (its nonce is not spent).
pub type SignEip7702Delegation = Authorized<Eip7702DelegationBody>;
/// The signatures of [`SignEip7702Delegation`], both by the owner key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eip7702Signatures {
    /// `r ‖ s ‖ v` (`v` = 27/28 as in every [`Signature65`]) over the EIP-7702 authorisation
    /// hash `keccak256(0x05 ‖ rlp([chain_id, delegate, nonce]))`; `address` is the owner (the
    /// authority). An authorisation list item carries `y_parity = v - 27`.
    pub authorization: Signature65,
    /// The raw ECDSA signature over `user_op_hash` by the owner key, when the body carries one;
    /// `None` otherwise.
    pub user_op: Option<Signature65>,
}
command!(SignEip7702Delegation => Eip7702Signatures, SignEip7702Delegation);

/// Body of [`ExportPrivateKey`].
#[cfg(feature = "export-secrets")]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportPrivateKeyBody {
    /// Wallet.
    pub wallet_id: WalletId,
    /// Path of the key to export.
    pub path: HdPath,
}
#[cfg(feature = "export-secrets")]
authorized!(ExportPrivateKeyBody, ExportPrivateKey);
/// Export a private key (development builds only).
#[cfg(feature = "export-secrets")]
pub type ExportPrivateKey = Authorized<ExportPrivateKeyBody>;
/// An exported private key.
#[cfg(feature = "export-secrets")]
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedKey {
    /// The path.
    pub path: HdPath,
    /// The address.
    pub address: Address,
    /// The 32-byte secp256k1 secret scalar.
    pub private_key: B256,
}
#[cfg(feature = "export-secrets")]
impl core::fmt::Debug for ExportedKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ExportedKey")
            .field("path", &self.path)
            .field("private_key", &"<redacted>")
            .finish()
    }
}
#[cfg(feature = "export-secrets")]
command!(ExportPrivateKey => ExportedKey, ExportPrivateKey);

/// Body of [`ChangePasskey`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangePasskeyBody {
    /// Wallet.
    pub wallet_id: WalletId,
    /// The new passkey's P-256 key, SEC1 uncompressed, on the curve.
    pub new_passkey_public_key: Vec<u8>,
    /// The new passkey's relying party id.
    pub new_rp_id: String,
}
authorized!(ChangePasskeyBody, ChangePasskey);
/// Replace the bound passkey; authorised by the current one.
pub type ChangePasskey = Authorized<ChangePasskeyBody>;
command!(ChangePasskey => Empty, ChangePasskey);

/// Issue a one-time nonce for a passkey challenge. Several may be pending per
/// wallet; each is consumed by the assertion that uses it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetChallenge {
    /// Wallet.
    pub wallet_id: WalletId,
}
/// A TA nonce.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeNonce {
    /// The nonce.
    pub nonce: B256,
    /// When it stops being accepted (unix seconds, TA clock).
    pub expires_at: u64,
}
command!(GetChallenge => ChallengeNonce, GetChallenge);

/// Public facts about a wallet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetWalletInfo {
    /// Wallet.
    pub wallet_id: WalletId,
}
/// Public facts about a wallet (no secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletInfo {
    /// Wallet.
    pub wallet_id: WalletId,
    /// Owner address at `m/44'/60'/0'/0/0`.
    pub owner: AddressInfo,
    /// The bound passkey key (65 bytes).
    pub passkey_public_key: Vec<u8>,
    /// SHA-256 of the relying party id.
    pub rp_id_hash: B256,
    /// Created (unix seconds).
    pub created_at: u64,
}
command!(GetWalletInfo => WalletInfo, GetWalletInfo);

// ----------------------------------------------------------------- agents

/// Body of [`CreateAgentKey`]: what the owner's passkey authorises (the
/// "mint payload"). The index is chosen by the host afterwards and is not
/// bound; the TA refuses an index that already exists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MintAgentBody {
    /// Wallet.
    pub wallet_id: WalletId,
    /// Free-form label (≤ 128 bytes).
    pub label: String,
    /// Credential lifetime in seconds (1 ..= `jwt::MAX_TTL_SECS`).
    pub ttl_secs: u64,
}
authorized!(MintAgentBody, CreateAgentKey);

/// Derive agent key `m/44'/60'/0'/1/<agent_index>` and mint its first
/// credential, in one call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateAgentKey {
    /// The index allocated by the host.
    pub agent_index: u32,
    /// The authorised mint payload.
    pub body: MintAgentBody,
    /// The owner's passkey assertion.
    pub assertion: PasskeyAssertion,
}
command!(CreateAgentKey => AgentCredential, CreateAgentKey);

/// Sign a userOpHash with an agent key. The TA verifies the JWT itself (HMAC
/// by kid in constant time; claims wallet, index, generation, expiry) before
/// signing EIP-191 over the hash.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignAgentUserOp {
    /// The wallet the host believes the credential is for.
    pub wallet_id: WalletId,
    /// The agent index the host believes the credential is for.
    pub agent_index: u32,
    /// The compact JWT as presented by the agent.
    pub jwt: String,
    /// The ERC-4337 userOpHash.
    pub user_op_hash: B256,
    /// The smart account the signature is for (bytes 1..21 of the output).
    pub account: Address,
}
impl core::fmt::Debug for SignAgentUserOp {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SignAgentUserOp")
            .field("wallet_id", &self.wallet_id)
            .field("agent_index", &self.agent_index)
            .field("jwt", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A session signature ([`crate::session_signature`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSignature {
    /// `marker ‖ account (20) ‖ agent key (20) ‖ r (32) ‖ s (32) ‖ v (1)`,
    /// [`crate::session_signature::SESSION_SIGNATURE_LEN`] bytes.
    pub signature: Vec<u8>,
    /// The agent key's address.
    pub agent_address: Address,
}
command!(SignAgentUserOp => AgentSignature, SignAgentUserOp);

/// The most requests one [`SignAgentUserOps`] takes.
pub const MAX_AGENT_SIGNATURES_PER_CALL: usize = 64;

/// Several [`SignAgentUserOp`] requests in one call: the TA checks and signs each exactly as it
/// would alone (in order, each against the state as the ones before it left it) and answers each
/// on its own: one refused credential refuses its own request only. The call as a whole is
/// refused ([`crate::TaError::SignBatchInvalid`]) only when it holds no request or more than
/// [`MAX_AGENT_SIGNATURES_PER_CALL`]. It saves the host one world switch (on the board) or one
/// socket exchange (with the simulator) per signature when many agents sign at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignAgentUserOps {
    /// The requests, answered in this order.
    pub requests: Vec<SignAgentUserOp>,
}
command!(SignAgentUserOps => Vec<Result<AgentSignature, crate::TaError>>, SignAgentUserOps);

/// Reserved id 13. The TA never MACs caller-chosen bytes; it answers
/// [`crate::TaError::Unsupported`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtHmacSign {
    /// Ignored.
    pub message: Vec<u8>,
}
command!(JwtHmacSign => Empty, JwtHmacSign);

/// Verify an agent credential (HMAC by kid, claims, generation, expiry).
/// Never returns a MAC.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtHmacVerify {
    /// The compact JWT.
    pub jwt: String,
}
impl core::fmt::Debug for JwtHmacVerify {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("JwtHmacVerify { jwt: <redacted> }")
    }
}
/// A credential the TA accepts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedCredential {
    /// The kid that verified it.
    pub kid: String,
    /// Its claims.
    pub claims: crate::jwt::AgentClaims,
}
command!(JwtHmacVerify => VerifiedCredential, JwtHmacVerify);

/// Rotate the JWT secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtRotateSecret {
    /// Normal, forced, or purge of expired verify-only kids.
    pub mode: RotationMode,
}
/// Result of a rotation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtRotation {
    /// The current kid afterwards (`None` only if the store is empty).
    pub current_kid: Option<String>,
    /// Kids that became verify-only in this call.
    pub retired: Vec<String>,
    /// Kids removed in this call.
    pub removed: Vec<String>,
    /// The whole store afterwards.
    pub secrets: Vec<JwtSecretInfo>,
}
command!(JwtRotateSecret => JwtRotation, JwtRotateSecret);

/// Body of [`JwtSignPayload`]: re-issue the credential of one agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshAgentBody {
    /// Wallet.
    pub wallet_id: WalletId,
    /// Agent index.
    pub agent_index: u32,
    /// New credential lifetime in seconds.
    pub ttl_secs: u64,
}
authorized!(RefreshAgentBody, JwtSignPayload);
/// Build and sign a new credential for an existing agent with the current
/// kid, bumping the agent's generation so the previous credential dies — one
/// atomic call, authorised by the owner's passkey.
pub type JwtSignPayload = Authorized<RefreshAgentBody>;
command!(JwtSignPayload => AgentCredential, JwtSignPayload);

/// Revoke an agent key. Needs no passkey: it only ever removes power (the
/// operator revokes from the host with `kms-admin`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeAgentKey {
    /// Wallet.
    pub wallet_id: WalletId,
    /// Agent index.
    pub agent_index: u32,
}
command!(RevokeAgentKey => AgentState, RevokeAgentKey);

/// Read an agent's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetAgentState {
    /// Wallet.
    pub wallet_id: WalletId,
    /// Agent index.
    pub agent_index: u32,
}
command!(GetAgentState => AgentState, GetAgentState);

/// List the JWT secret store (kids and status only).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtSecretStatus {}
command!(JwtSecretStatus => Vec<JwtSecretInfo>, JwtSecretStatus);

// --------------------------------------------------------------- operator

/// The operator key: a secp256k1 key held in the TA whose only signing use is
/// `revokeSession` transactions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorKey {
    /// Create it from TA randomness if it does not exist yet.
    pub create_if_missing: bool,
}
/// The operator key's public facts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorKeyInfo {
    /// Address.
    pub address: Address,
    /// SEC1 compressed public key.
    pub public_key: Vec<u8>,
    /// Created (unix seconds).
    pub created_at: u64,
}
command!(OperatorKey => OperatorKeyInfo, OperatorKey);

/// Sign an EIP-1559 transaction calling
/// `SessionKeyValidator.revokeSession(account, agent_key)`. The TA builds the
/// call data itself; the host chooses only the chain fields, within the
/// ceilings of [`crate::operator`] (gas limit, fees, spend budget), refused
/// with [`crate::TaError::OperatorTxRefused`] above them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorSignRevokeSession {
    /// Chain id.
    pub chain_id: u64,
    /// Operator account nonce.
    pub nonce: u64,
    /// Max priority fee per gas.
    pub max_priority_fee_per_gas: u128,
    /// Max fee per gas.
    pub max_fee_per_gas: u128,
    /// Gas limit.
    pub gas_limit: u64,
    /// The SessionKeyValidator contract.
    pub validator: Address,
    /// The smart account whose session is revoked.
    pub account: Address,
    /// The agent key whose session is revoked.
    pub agent_key: Address,
}
command!(OperatorSignRevokeSession => SignedTransaction, OperatorSignRevokeSession);

// ------------------------------------------------------------------- misc

/// Version and build facts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaInfo {}
/// Version and build facts of the TA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaInfoOutput {
    /// TA crate version.
    pub version: String,
    /// Protocol version spoken.
    pub protocol_version: u8,
    /// Whether `export-secrets` is compiled in.
    pub export_secrets: bool,
    /// Whether the test seeding command is compiled in and enabled.
    pub test_seed: bool,
    /// The TA clock (unix seconds).
    pub now: u64,
}
command!(TaInfo => TaInfoOutput, TaInfo);

/// Accept a restored sealed state (command id 24).
///
/// The TA refuses a sealed state older than its monotonic counter
/// ([`crate::TaError::StateRolledBack`]) on every command that touches state. This command is the
/// one way out: the TA re-seals the state it holds with a version past the counter (so the
/// counter moves forward and the state is current again) and serves it from then on. Everything
/// the restored copy predates comes back in the TA: agents revoked since, superseded credentials
/// (an older generation is current again), rotated-out JWT secrets, removed wallets, replaced
/// passkeys. When the state is not rolled back it still moves the version forward (harmless).
///
/// No passkey: it is an operator action on the host (`kms-admin accept-restore --yes`), open to
/// the one normal-world identity the TA admits (on OP-TEE its login check, `KMS_TA_CLIENT_LOGIN`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptRestore {}
/// What [`AcceptRestore`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreAccepted {
    /// The version the sealed state carried.
    pub sealed_version: u64,
    /// The monotonic counter before the call.
    pub counter: u64,
    /// The version the state now carries (and the counter's value, once advanced).
    pub new_version: u64,
    /// Whether the state was rolled back (`sealed_version < counter`).
    pub was_rolled_back: bool,
    /// Whether the JWT secrets were force-rotated with it (they are when it was rolled back):
    /// every agent credential is dead and owners refresh them.
    pub jwt_secrets_rotated: bool,
}
command!(AcceptRestore => RestoreAccepted, AcceptRestore);

/// Test only: create a wallet from a given mnemonic (simulator builds only,
/// and only when the simulator was started with test seeding enabled).
#[cfg(feature = "test-seed")]
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedWalletForTest {
    /// A BIP39 English mnemonic.
    pub mnemonic: String,
    /// Passkey to bind.
    pub passkey_public_key: Vec<u8>,
    /// Relying party id.
    pub rp_id: String,
}
#[cfg(feature = "test-seed")]
impl core::fmt::Debug for SeedWalletForTest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SeedWalletForTest { mnemonic: <redacted>, .. }")
    }
}
#[cfg(feature = "test-seed")]
command!(SeedWalletForTest => CreateWalletOutput, SeedWalletForTest);
