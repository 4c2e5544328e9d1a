//! The key companion: an HTTP service (axum) in front of the Trusted
//! Application that holds wallets and agent keys.
//!
//! * [`config`] — every setting, from flags and environment.
//! * [`server`] — the router and start-up ([`server::start`]).
//! * [`webauthn`] — ceremonies bound to TA nonces and payload digests.
//! * [`ops`] — request types and the one builder of each TA body.
//! * [`routes`] — the HTTP adapters: extract, call a service, answer.
//! * [`service`] — what the companion does: agent credentials, the intent pipeline.
//! * [`auth`], [`ratelimit`] — API keys and limits, before any TEE call.
//! * [`bounds`] — a cap on requests in progress and an answer timeout.
//! * [`chain`] — the chain client, nonce tracker, operator key, and chain error mapping for
//!   `/kms/agent-sessions` and `/agent/intents`.
//! * [`tee`] — the one way to the TA: metered, rollback-guarded, and the checked signing steps.
//! * [`error`] — one error type, one status mapping.
//! * [`lifecycle`] — agent intents' statuses: looked up before judged, settled with evidence.
//! * [`revocation`] — revoking an agent in every layer (database, TA, each account's session
//!   on chain): the one code path of the HTTP route and `kms-admin revoke-agent-key`.
//! * [`audit`], [`metrics`], [`openapi`], [`tasks`], [`reconcile`] (DB/TA
//!   agreement after a crash), [`replicas`] (several companions on one database).
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod bounds;
pub mod chain;
pub mod config;
pub mod der;
pub mod dev;
pub mod error;
pub mod extract;
pub mod lifecycle;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod ratelimit;
pub mod reconcile;
pub mod replicas;
pub mod revocation;
pub mod routes;
pub mod server;
pub mod service;
pub mod state;
pub mod tasks;
pub mod tee;
pub mod webauthn;

pub use config::Config;
pub use server::{start, Running};
