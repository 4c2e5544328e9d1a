//! End-to-end test support for the agent key companion.
//!
//! [`stack::Stack`] runs `anvil/stack.sh` (anvil + canonical EntryPoints v0.7/v0.8 + the project's
//! contracts + the Alto bundler) as a child process, waits for the JSON file it writes, and stops
//! it when dropped. Tests live in `e2e/tests/`.

#![warn(missing_docs)]

pub mod stack;
