#!/usr/bin/env bash
# Builds the project's contracts and refreshes the committed artifacts the Rust crate kms-contracts
# embeds, with the `build-contracts` binary of contracts/builder (foundry-compilers and the pinned
# solc 0.8.37 of anvil/bin/solc, with the settings of contracts/foundry.toml; nothing downloaded):
#   contracts/artifacts/<Contract>.json   {contractName, abi, bytecode, deployedBytecode}
#   contracts/artifacts/sources.sha256    SHA-256 of every product .sol (contracts/*.sol, interfaces/, testing/)
# contracts/build.rs refuses to build when a source no longer matches its recorded hash.
# Installs anvil/node_modules first when needed; arguments go to build-contracts (see its --help).
# A debug build: it shares the workspace's dependency builds, and solc does the heavy work.
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
kms_ensure_packages

cd "$KMS_ROOT"
exec cargo run --quiet -p kms-contracts-builder -- "$@"
