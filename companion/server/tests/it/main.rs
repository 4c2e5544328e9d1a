//! The companion's HTTP tests, in one test binary (one build and link instead of one per
//! file): the real server in-process over a real `ta-sim`, real WebAuthn ceremonies with a
//! software authenticator. Run one area with `cargo test -p kms-companion --test it <module>::`.

mod common;

mod agent_api;
mod agent_session;
mod audit;
mod contract;
mod health;
mod lockout;
mod operations;
mod replicas;
mod rollback;
mod sign_batch;
mod ui_page;
mod wallet_api;
