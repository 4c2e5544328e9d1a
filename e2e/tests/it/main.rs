//! The end-to-end tests, in one test binary: one build and link instead of one per file, and
//! one shared anvil + Alto stack ([`kms_e2e::stack::Stack::shared`]) for every test that uses
//! it (they never move the chain's clock, so they run side by side on it; the `periods` test
//! that does starts a stack of its own, and so do `in_flight` and a `periods` test that stop
//! Alto's bundling). Each module is one area; run one with
//! `cargo test -p kms-e2e --test it <module>::`.

mod admin;
mod agent_sessions;
mod bounded;
mod common;
mod demo;
mod eip7702;
mod erc1271;
mod erc7579;
mod erc7579_companion;
mod erc7715;
mod in_flight;
mod intents;
mod lifecycle;
mod mcp;
mod owner_userop;
mod periods;
mod replicas;
mod sessions;
