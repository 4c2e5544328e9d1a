#!/usr/bin/env bash
# Run every check and test of the project: formatting, lints, the OP-TEE
# type checks, the Solidity tests (forge, and halmos's symbolic tests in the
# background), and all Rust tests (unit, simulator, HTTP end-to-end, anvil +
# bundler end-to-end, the /ui page in headless Chromium, and the viem account of
# clients/viem through Alto); the database's tests on SQLite and again on a
# throwaway PostgreSQL server (scripts/postgres.sh). Installs what it needs.
#
# usage: ./test.sh [--quick]   (--quick: skip the Solidity and chain stages)
set -euo pipefail
cd "$(dirname "$0")"
. scripts/lib.sh

QUICK=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) die "unknown argument: $arg" ;;
  esac
done

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}
# One full build, not an edit loop: incremental compilation data would more than
# double the target directory's size (it filled a CI machine's disk) for no gain.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
start=$(date +%s)
free_kib=$(df -k --output=avail . | tail -1)
echo "Free on the target directory's disk at the start: $((free_kib / 1024 / 1024)) GB"
# A cold run needs about 3 GB in target/ and 2 GB of tools (crates, npm packages, Chromium).
if [ "$free_kib" -lt $((6 * 1024 * 1024)) ]; then
  echo "warning: less than 6 GB free here; a cold run needs about 5 GB (target/ ~3 GB)" >&2
fi

# What the later stages download (the npm packages of the chain tools and of the browser test,
# Debian's Chromium) is fetched in the background from the start: network-bound work that
# overlaps the CPU-bound builds instead of following them. Its output goes to a log shown if it
# fails; `provisioned` waits for it before the first stage that needs it.
PROVISION_PID=""
PROVISION_LOG=""
if [ "$QUICK" -eq 0 ]; then
  PROVISION_LOG=$(mktemp "${TMPDIR:-/tmp}/kms-provision.XXXXXX")
  (
    set -e
    need_node
    need_debs flock:util-linux sha256sum:coreutils
    kms_ensure_packages
    e2e/browser/run.sh --install-only
    clients/viem/run.sh --install-only
  ) >"$PROVISION_LOG" 2>&1 &
  PROVISION_PID=$!
fi
HALMOS_PID=""
HALMOS_LOG=""
# On an early failure: let the provisioning finish rather than leave an interrupted apt-get or
# npm behind; stop halmos.
cleanup() {
  [ -z "$HALMOS_PID" ] || kill -- "-$HALMOS_PID" 2>/dev/null || true
  [ -z "$PROVISION_PID" ] || wait "$PROVISION_PID" 2>/dev/null || true
  rm -f "$PROVISION_LOG" "$HALMOS_LOG"
}
trap cleanup EXIT
provisioned() {
  [ -n "$PROVISION_PID" ] || return 0
  local started=$SECONDS
  if ! wait "$PROVISION_PID"; then
    cat "$PROVISION_LOG" >&2
    die "installing the npm packages and Chromium failed (log above)"
  fi
  echo "(packages installed in the background; waited $((SECONDS - started)) s for them here)"
  PROVISION_PID=""
  rm -f "$PROVISION_LOG"
}

stage "cargo fmt --check"
cargo fmt --all -- --check

# tokio's test-util (time control for tests) comes with the tests' software passkey; the release
# companion must not carry it (.config/hakari.toml leaves the passkey out of workspace-hack).
stage "The companion's own build has no tokio test-util"
if cargo tree -p kms-companion -e normal,features -i tokio --locked | grep -q 'tokio feature "test-util"'; then
  die "kms-companion's normal build enables tokio/test-util (see .config/hakari.toml): cargo tree -p kms-companion -e normal,features -i tokio"
fi

stage "cargo clippy (workspace, all targets, -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The variant builds below add `-p workspace-hack` (see workspace-hack/Cargo.toml): it
# unifies the dependencies' features with the workspace build above, so each variant
# recompiles only our crates whose features change, never alloy, tokio or the crypto crates.
stage "cargo clippy (TA core with its development features)"
cargo clippy -p kms-ta -p workspace-hack --all-targets --locked \
  --features kms-ta/test-seed,kms-ta/export-secrets -- -D warnings

stage "OP-TEE type checks and clippy (TA entry points and libteec client, without OP-TEE libraries)"
cargo clippy -p kms-ta-optee -p kms-tee-client -p workspace-hack --all-targets --locked \
  --features kms-ta-optee/optee-doc,kms-tee-client/optee-doc -- -D warnings
cargo clippy -p kms-ta-sim -p workspace-hack --all-targets --locked \
  --features kms-ta-sim/fault-injection -- -D warnings

if [ "$QUICK" -eq 0 ]; then
  stage "Node.js, the chain tools and Chromium (installed in the background since the start)"
  provisioned
  stage "Solidity tests (forge, through the pinned solc.js shim)"
  anvil/test-contracts.sh
fi

# Libraries, binaries and test targets; not rustdoc's doc-test pass, which costs a rustdoc run
# per crate and would find no example to run (the docs' examples are text).
TEST_ARGS=(--workspace --locked --lib --bins --tests)
[ "$QUICK" -eq 0 ] || TEST_ARGS+=(--exclude kms-e2e)
stage "Build the tests"
cargo test "${TEST_ARGS[@]}" --no-run

if [ "$QUICK" -eq 0 ]; then
  # The session accounting proven for all inputs within small bounds (contracts/test/halmos/):
  # the gas charge against the EntryPoint's prefund bound and every shape of a single call, under
  # a minute on 2 cores (the batch checks, about 4 more minutes, are the full run documented in
  # BENCHMARKS.md). It runs in the background from here, beside the test runs, which mostly wait
  # on the chain and the bundler; its verdict is read at the end.
  stage "Symbolic tests (halmos): started in the background"
  HALMOS_LOG=$(mktemp "${TMPDIR:-/tmp}/kms-halmos.XXXXXX")
  # Its own process group (setsid), so that an early exit stops the solvers too.
  setsid scripts/halmos.sh --quick >"$HALMOS_LOG" 2>&1 &
  HALMOS_PID=$!
fi

stage "Unit and integration tests (workspace; e2e tests start anvil + Alto themselves)"
cargo test "${TEST_ARGS[@]}"
# The database's tests, kms-admin's and the companion's again on PostgreSQL (the stage above ran
# them on SQLite; the companion's test harness puts it on a fresh database): a throwaway
# server, installed from Debian packages when missing, on 127.0.0.1 and a free port, as an
# unprivileged user, stopped at the end (scripts/postgres.sh). KMS_TEST_POSTGRES_URL is set for
# the whole command, so a server that does not answer fails the tests; --include-ignored runs
# the test that compares the two schemas, which needs the server.
stage "Database tests against PostgreSQL (kms-db, kms-admin, the companion's; scripts/postgres.sh)"
scripts/postgres.sh cargo test -p kms-db -p kms-admin -p kms-companion --locked --lib --tests \
  -- --include-ignored
if [ "$QUICK" -eq 0 ]; then
  # Two companions on a throwaway server and one ta-sim, one agent's intents sent to both at once
  # on the chain stack (e2e/tests/it/replicas.rs: ignored in the workspace stage above, which has no
  # PostgreSQL; it fails when run without one).
  scripts/postgres.sh cargo test -p kms-e2e --locked --test it replicas:: -- --include-ignored
fi
stage "ta-sim fault-injection tests (crash before the rename or the counter, failed directory fsync; hooks compiled in)"
cargo test -p kms-ta-sim -p workspace-hack --locked --features kms-ta-sim/fault-injection --test crash
stage "TA core tests with export-secrets compiled in"
cargo test -p kms-ta -p workspace-hack --locked --features kms-ta/test-seed,kms-ta/export-secrets
stage "kms-admin with export-secrets (the export_key binary, still passkey-gated)"
cargo clippy -p kms-admin -p workspace-hack --all-targets --locked \
  --features kms-admin/export-secrets -- -D warnings
cargo test -p kms-admin -p workspace-hack --locked --features kms-admin/export-secrets --test it export_key::
# The proptest versions of the fuzz properties (kms-props) and the kill -9
# fault-injection test (kms-loadgen, tests/fault_injection.rs) run in the
# workspace test stage above.
stage "Fuzzing: a short cargo-fuzz run of each target (says so and skips without cargo-fuzz)"
scripts/fuzz.sh "${FUZZ_SECS:-10}"

stage "Browser test: the /ui page in headless Chromium with a virtual passkey"
if [ "$QUICK" -eq 1 ]; then
  e2e/browser/run.sh --no-chain
else
  e2e/browser/run.sh   # with anvil + Alto: grants a session on-chain, an intent, revokes
fi

stage "viem account (clients/viem): unit tests; through Alto on the demo's stack"
if [ "$QUICK" -eq 1 ]; then
  clients/viem/run.sh --unit-only
else
  clients/viem/run.sh   # the demo's session: an operation lands, a disallowed target is refused
fi

if [ -n "$HALMOS_PID" ]; then
  stage "Symbolic tests (halmos): the verdict"
  halmos_ok=1
  wait "$HALMOS_PID" || halmos_ok=0
  HALMOS_PID=""
  cat "$HALMOS_LOG"
  [ "$halmos_ok" -eq 1 ] || die "the symbolic tests failed (halmos output above)"
fi

echo
echo "Target directory: $(du -sh target 2>/dev/null | cut -f1); free on its disk: $(df -h --output=avail . | tail -1 | tr -d ' ')"
echo "All checks passed in $(( $(date +%s) - start )) s."
