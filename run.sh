#!/usr/bin/env bash
# Bring up the whole local stack and run the demo: anvil (canonical EntryPoint
# v0.7 + the project's contracts), the Alto bundler, ta-sim and the companion
# (SQLite), all on free 127.0.0.1 ports chosen at run time (Alto binds 0.0.0.0).
# A software-passkey owner registers a wallet, creates an agent key and grants
# it a session on chain; the agent submits an intent; the receipt and balance
# change are printed. The stack then stays up until Ctrl-C, with curl examples.
# What was started (URLs, account, agent keyId and address, credential and API-key file
# paths, the kms-mcp command) is written as JSON to target/kms-demo/stack.json
# ($KMS_DEMO_DIR/stack.json), beside agent.jwt and api.key (mode 0600).
#
# usage: ./run.sh [--no-wait] [--help]
#   --no-wait  stop everything and exit once the demo has run
# Installs what it needs on a fresh Debian machine with Rust (Node.js and npm
# with apt-get when missing; npm packages from anvil/package-lock.json).
set -euo pipefail
cd "$(dirname "$0")"
. scripts/lib.sh

ARGS=()
for arg in "$@"; do
  case "$arg" in
    --no-wait) ARGS+=(--no-wait) ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $arg (see ./run.sh --help)" ;;
  esac
done

command -v cargo >/dev/null 2>&1 || die "Rust (cargo) is required: https://rustup.rs"
stage "Node.js and system tools for the local chain"
need_node
need_debs flock:util-linux sha256sum:coreutils curl:curl

stage "Building ta-sim and the demo"
cargo build --locked -q -p kms-ta-sim --bin ta-sim -p kms-e2e --bin demo -p kms-mcp --bin kms-mcp
TARGET_DIR=${CARGO_TARGET_DIR:-target}
export KMS_TA_SIM_BIN="$TARGET_DIR/debug/ta-sim"

stage "Starting the stack and running the demo"
# What was started, as JSON (stack.json), beside the agent credential and the API key (0600).
STATE_DIR=${KMS_DEMO_DIR:-$TARGET_DIR/kms-demo}
exec "$TARGET_DIR/debug/demo" --state-dir "$STATE_DIR" "${ARGS[@]}"
