#!/usr/bin/env bash
# clients/viem/run.sh — test the viem account (toAgentSessionAccount) against the real stack.
#
# usage: clients/viem/run.sh [--unit-only] [--install-only]
#
# 1. installs what is missing: Node.js >= 20 and the npm packages of clients/viem/package-lock.json
#    (`npm ci`, skipped when node_modules matches the lock file);
# 2. type-checks the package (tsc), builds dist/ and loads it in Node.js, and runs the unit tests
#    (vitest, test/unit: nonce keys, the stub signature, callData, userOpHash vectors of the Rust
#    implementation);
# 3. builds ta-sim and the demo (cargo, --locked; honours CARGO_TARGET_DIR);
# 4. runs the demo (./run.sh's binary) in the background with a temporary state directory: anvil +
#    the canonical EntryPoints + contracts, Alto, ta-sim and the companion on free 127.0.0.1 ports,
#    a wallet with a software passkey, an agent credential and an active session on a deployed
#    account, all written to stack.json; once for EntryPoint v0.7 and, when the demo offers
#    --entry-point-version, once for v0.8;
# 5. runs the integration tests (vitest, test/integration) with KMS_STACK_JSON: viem's bundler
#    client through Alto (an operation lands, a batch lands, a disallowed target is refused with
#    the validator's error decoded) and ERC-7715 (viem's erc7715Actions on the companion's /rpc,
#    approved with a software passkey; an operation within the grant lands);
# 6. stops the demo (SIGINT, by PID; it stops what it started) and keeps its logs in
#    clients/viem/artifacts/.
# --unit-only stops after step 2; --install-only after step 1 (test.sh runs it early).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
ROOT="$(cd "$HERE/../.." && pwd -P)"
cd "$ROOT"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

UNIT_ONLY=0
INSTALL_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --unit-only) UNIT_ONLY=1 ;;
    --install-only) INSTALL_ONLY=1 ;;
    -h|--help) sed -n '2,22p' "$HERE/run.sh" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $arg (see --help)" ;;
  esac
done

stage "viem account: Node.js and npm packages"
need_node
need_debs flock:util-linux sha256sum:coreutils
want="$(sha256sum "$HERE/package-lock.json" | cut -d' ' -f1)"
stamp="$HERE/node_modules/.kms-lock-sha256"
(
  flock 9
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    (cd "$HERE" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
    echo "$want" >"$stamp"
  fi
) 9>"$HERE/.install.lock"
[ "$INSTALL_ONLY" -eq 1 ] && exit 0

stage "viem account: type check and unit tests"
(
  cd "$HERE"
  node_modules/.bin/tsc --noEmit
  # The build consumers import (dist/, ESM + declarations) loads in plain Node.js.
  rm -rf dist
  node_modules/.bin/tsc -p tsconfig.build.json
  node --input-type=module -e 'const m = await import("./dist/index.js");
    if (typeof m.toAgentSessionAccount !== "function") throw new Error("dist/ exports no toAgentSessionAccount")'
  node_modules/.bin/vitest run test/unit
)
[ "$UNIT_ONLY" -eq 1 ] && exit 0

stage "viem account: build ta-sim and the demo"
cargo build --locked -q -p kms-ta-sim --bin ta-sim -p kms-e2e --bin demo
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
[ -x "$BIN/demo" ] && [ -x "$BIN/ta-sim" ] || die "no demo/ta-sim in $BIN"

ARTIFACTS="$HERE/artifacts"
rm -rf "$ARTIFACTS"
mkdir -p "$ARTIFACTS"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/kms-viem.XXXXXX")"
chmod 700 "$TMP"
DEMO_PID=""

stop_demo() {
  local i
  if [ -n "$DEMO_PID" ] && kill -0 "$DEMO_PID" 2>/dev/null; then
    # The demo stops the companion, ta-sim, Alto and anvil on Ctrl-C (SIGINT).
    kill -INT "$DEMO_PID" 2>/dev/null || true
    for i in $(seq 1 150); do
      kill -0 "$DEMO_PID" 2>/dev/null || break
      sleep 0.2
    done
    kill -0 "$DEMO_PID" 2>/dev/null && { echo "the demo ($DEMO_PID) did not stop; killing it" >&2; kill -KILL "$DEMO_PID" 2>/dev/null || true; }
  fi
  [ -z "$DEMO_PID" ] || wait "$DEMO_PID" 2>/dev/null || true
  DEMO_PID=""
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_demo
  # The logs never hold the credential or the API key (they go to 0600 files in $TMP).
  cp "$TMP"/demo-*.log "$ARTIFACTS/" 2>/dev/null || true
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# One demo per EntryPoint version the demo binary offers (--entry-point-version; v0.7 alone
# before it had the flag).
VERSIONS=(0.7)
demo_help="$("$BIN/demo" --help)"
case "$demo_help" in *--entry-point-version*) VERSIONS=(0.7 0.8) ;; esac

for v in "${VERSIONS[@]}"; do
  log="$TMP/demo-v$v.log"
  state="$TMP/state-v$v"
  stage "viem account, EntryPoint v$v: the demo's stack (anvil + EntryPoints + contracts, Alto, ta-sim, companion) and session"
  args=(--state-dir "$state")
  [ "$v" = 0.7 ] || args+=(--entry-point-version "$v")
  # setsid: its own session, so that a Ctrl-C at the terminal reaches it only through stop_demo.
  KMS_TA_SIM_BIN="$BIN/ta-sim" setsid "$BIN/demo" "${args[@]}" >"$log" 2>&1 &
  DEMO_PID=$!
  # The demo prints this line once stack.json is written (after the grant and its own intents).
  ready='What was started, as JSON'
  for _ in $(seq 1 900); do
    grep -q "$ready" "$log" 2>/dev/null && break
    kill -0 "$DEMO_PID" 2>/dev/null || { tail -n 60 "$log" >&2; die "the demo exited before its stack was up"; }
    sleep 0.2
  done
  grep -q "$ready" "$log" || { tail -n 60 "$log" >&2; die "the demo's stack was not up in 180 s"; }
  node -e 'const s=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));
    console.log(`companion ${s.companion.url}, anvil ${s.chain.rpcUrl}, bundler ${s.chain.bundlerUrl}, EntryPoint ${s.chain.entryPointVersion} ${s.chain.entryPoint}, account ${s.account}`)' \
    "$state/stack.json"

  stage "viem account, EntryPoint v$v: integration tests through Alto"
  set +e
  (cd "$HERE" && KMS_STACK_JSON="$state/stack.json" node_modules/.bin/vitest run test/integration)
  rc=$?
  set -e
  kill -0 "$DEMO_PID" 2>/dev/null || { echo "the demo's stack died during the tests" >&2; rc=1; }
  if [ "$rc" -ne 0 ]; then
    echo "--- demo log (last 60 lines) ---" >&2
    tail -n 60 "$log" >&2 || true
    die "viem account integration tests failed on EntryPoint v$v (logs in ${ARTIFACTS#"$ROOT"/})"
  fi
  stop_demo
done
echo "viem account tests passed (EntryPoint ${VERSIONS[*]})"
