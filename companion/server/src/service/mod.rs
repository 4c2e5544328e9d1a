//! The service layer: what the companion does, between the HTTP adapters ([`crate::routes`])
//! and the four worlds (the database, the TA, the chain, the audit log).
//!
//! Routes extract and validate a request, call one service, and answer; the background tasks
//! ([`crate::tasks`]) and `kms-admin` call the same services. Each service returns its own typed
//! errors where the domain has them ([`credentials::CredentialError`],
//! [`intents::IntentError`]), converted to HTTP once, in [`crate::error`].
//!
//! - [`credentials`]: agent credentials issued, re-issued, revoked and checked
//!   ([`credentials::AgentCredentials`]).
//! - [`intents`]: an agent's intent from its calls to the bundler and on to its receipt
//!   ([`intents::IntentPipeline`]).
//! - [`permissions`]: ERC-7715 permission requests (`wallet_grantPermissions` on `/rpc`): mapped
//!   onto a session, waiting for the owner, answered once the owner granted it.
//! - [`sessions`]: session grants, from the owner's ceremony to the active session on chain,
//!   and their settlement by the background task.
//! - [`wallets`]: wallets registered over a passkey ceremony, and the TA's signatures with their
//!   keys ([`wallets::Wallets`]).

pub mod credentials;
pub mod intents;
pub mod permissions;
pub mod sessions;
pub mod wallets;
