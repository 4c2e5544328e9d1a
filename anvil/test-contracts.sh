#!/usr/bin/env bash
# Runs the forge tests of contracts/ (installing the pinned toolchain first when needed).
# Extra arguments go to `forge test`, e.g. `anvil/test-contracts.sh --match-contract Erc7562`.
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,3p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
kms_ensure_packages
if ! kms_artifacts_fresh; then
    echo "warning: contracts/artifacts is stale (a contracts/*.sol source changed); run anvil/build-contracts.sh" >&2
fi
cd "$KMS_CONTRACTS_DIR"
kms_locked "$KMS_BIN/forge" build --quiet
exec "$KMS_BIN/forge" test "$@"
