#!/usr/bin/env bash
# Builds the project's contracts with forge and refreshes the committed artifacts the Rust crate
# kms-contracts embeds:
#   contracts/artifacts/<Contract>.json   {contractName, abi, bytecode, deployedBytecode}
#   contracts/artifacts/sources.sha256    SHA-256 of every product .sol (contracts/*.sol, interfaces/, testing/)
# contracts/build.rs refuses to build when a source no longer matches its recorded hash.
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
kms_require jq
kms_ensure_packages

CONTRACTS=(SessionKeyValidator AgentAccount AgentAccountFactory TestToken)

start=$SECONDS
kms_log "forge build (contracts/)"
(cd "$KMS_CONTRACTS_DIR" && kms_locked "$KMS_BIN/forge" build --skip test --skip "test/**" --quiet)

out="$KMS_CONTRACTS_DIR/artifacts"
mkdir -p "$out"
# The manifest goes last: an interrupted run leaves it stale, which build.rs reports.
rm -f "$out/sources.sha256"
for name in "${CONTRACTS[@]}"; do
    src="$KMS_CONTRACTS_DIR/out/$name.sol/$name.json"
    [[ -f "$src" ]] || die "forge produced no $src"
    jq --arg name "$name" '{contractName: $name, abi: .abi, bytecode: .bytecode.object, deployedBytecode: .deployedBytecode.object}' \
        "$src" >"$out/$name.json.tmp"
    mv "$out/$name.json.tmp" "$out/$name.json"
done
kms_source_hashes >"$out/sources.sha256.tmp"
mv "$out/sources.sha256.tmp" "$out/sources.sha256"
kms_log "artifacts written to contracts/artifacts in $((SECONDS - start)) s"
