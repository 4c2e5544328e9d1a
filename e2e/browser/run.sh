#!/usr/bin/env bash
# e2e/browser/run.sh — drive the companion's /ui page in headless Chromium.
#
# usage: e2e/browser/run.sh [--no-chain] [--docs-screenshot FILE] [--install-only]
#
# 1. installs what is missing: Debian's `chromium` (apt-get), Node.js >= 20, and the npm
#    packages of e2e/browser/package-lock.json (`npm ci`, skipped when node_modules matches);
# 2. builds ta-sim and the companion (cargo, --locked; honours CARGO_TARGET_DIR);
# 3. unless --no-chain: starts anvil + EntryPoint + contracts + Alto (anvil/stack.sh);
# 4. starts `companion --dev` on a free port of 127.0.0.1 (its own ta-sim and temporary data
#    directory; rp id localhost; the chain settings of step 3);
# 5. runs e2e/browser/ui.test.mjs (virtual WebAuthn authenticator with user verification);
# 6. stops what it started (by PID) and keeps screenshots and logs in e2e/browser/artifacts/.
#
# The companion's API key goes from its stdout file to the test's environment; it is never
# printed. --docs-screenshot FILE also writes the README screenshot (docs/ui.png).
# --install-only does step 1 and exits (test.sh runs it early, in the background).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
ROOT="$(cd "$HERE/../.." && pwd -P)"
cd "$ROOT"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

CHAIN=1
DOCS=""
INSTALL_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --no-chain) CHAIN=0; shift ;;
    --install-only) INSTALL_ONLY=1; shift ;;
    --docs-screenshot) [ $# -ge 2 ] || die "--docs-screenshot needs a file"; DOCS="$(realpath -m "$2")"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

ARTIFACTS="$HERE/artifacts"

stage "browser test: Chromium, Node.js, npm packages"
need_node
need_debs chromium:chromium flock:util-linux sha256sum:coreutils curl:curl
CHROMIUM="${CHROMIUM:-$(command -v chromium)}"
want="$(sha256sum "$HERE/package-lock.json" | cut -d' ' -f1)"
stamp="$HERE/node_modules/.kms-lock-sha256"
(
  flock 9
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    (cd "$HERE" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
    echo "$want" >"$stamp"
  fi
) 9>"$HERE/.install.lock"
echo "chromium: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
[ "$INSTALL_ONLY" -eq 1 ] && exit 0
rm -rf "$ARTIFACTS"
mkdir -p "$ARTIFACTS"

stage "browser test: build ta-sim and the companion"
cargo build --locked -p kms-ta-sim -p kms-companion
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
[ -x "$BIN/companion" ] && [ -x "$BIN/ta-sim" ] || die "no companion/ta-sim in $BIN"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/kms-ui.XXXXXX")"
chmod 700 "$TMP"
STACK_PID=""
COMPANION_PID=""

stop_pid() { # PID NAME
  local pid="$1" i
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && { echo "$2 ($pid) did not stop; killing it" >&2; kill -KILL "$pid" 2>/dev/null || true; }
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_pid "$COMPANION_PID" companion
  stop_pid "$STACK_PID" anvil/stack.sh
  # Logs are kept as artefacts (they never hold keys, JWTs or the API key).
  [ -f "$TMP/companion.log" ] && cp "$TMP/companion.log" "$ARTIFACTS/companion.log"
  [ -f "$TMP/stack.log" ] && cp "$TMP/stack.log" "$ARTIFACTS/stack.log"
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits until FILE holds a line matching REGEX, while PID lives (N tries, 0.2 s apart).
wait_for() { # FILE REGEX PID NAME N
  local i
  for i in $(seq 1 "$5"); do
    if [ -f "$1" ] && grep -Eq "$2" "$1"; then return 0; fi
    kill -0 "$3" 2>/dev/null || { tail -n 40 "$TMP"/*.log >&2 || true; die "$4 exited before it was ready"; }
    sleep 0.2
  done
  tail -n 40 "$TMP"/*.log >&2 || true
  die "$4 was not ready"
}

CHAIN_ARGS=()
CHAIN_ENV=()
if [ "$CHAIN" -eq 1 ]; then
  if ! "$BIN/companion" --help | grep -q -- '--account-factory'; then
    die "this companion has no chain routes (no --account-factory); run with --no-chain"
  fi
  stage "browser test: anvil + EntryPoint v0.7 + contracts + Alto"
  anvil/stack.sh --out "$TMP/stack.json" >"$TMP/stack.log" 2>&1 &
  STACK_PID=$!
  wait_for "$TMP/stack.json" '"bundlerUrl"' "$STACK_PID" anvil/stack.sh 1500
  j() { node -e 'const s=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")); console.log(s[process.argv[2]])' "$TMP/stack.json" "$1"; }
  RPC_URL="$(j rpcUrl)"
  CHAIN_ARGS=(
    --rpc-url "$RPC_URL"
    --bundler-url "$(j bundlerUrl)"
    --validator-address "$(j sessionKeyValidator)"
    --account-factory "$(j accountFactoryV07)"
    --entry-point-version v0.7
    --entry-point "$(j entryPointV07)"
    --chain-id "$(j chainId)"
    --receipt-wait-secs 60
    --intent-poll-secs 1
  )
  CHAIN_ENV=(
    "RPC_URL=$RPC_URL"
    "ACCOUNT_FACTORY=$(j accountFactoryV07)"
    # Any address will do as the session's one target; the agent then sends it 1000 wei.
    "GRANT_TARGET=0x000000000000000000000000000000000000bEEF"
    "INTENT_TO=0x000000000000000000000000000000000000bEEF"
    # An ERC-20 deployed by the stack: a target with listed functions, and a token cap.
    "TEST_TOKEN=$(j testToken)"
  )
  echo "anvil $RPC_URL, bundler $(j bundlerUrl)"
fi

stage "browser test: companion --dev on 127.0.0.1 (free port)"
"$BIN/companion" --dev --ta-sim-bin "$BIN/ta-sim" --listen 127.0.0.1:0 --log info,kms_companion=info \
  "${CHAIN_ARGS[@]}" >"$TMP/companion.out" 2>"$TMP/companion.log" &
COMPANION_PID=$!
wait_for "$TMP/companion.log" 'listening on http://localhost:[0-9]+' "$COMPANION_PID" companion 600
wait_for "$TMP/companion.out" '^KMS_API_KEY=kms_' "$COMPANION_PID" companion 100
PORT="$(grep -Eo 'listening on http://localhost:[0-9]+' "$TMP/companion.log" | head -n1 | grep -Eo '[0-9]+$')"
ORIGIN="http://localhost:$PORT"
echo "companion at $ORIGIN (API key in the test's environment only)"

stage "browser test: ui.test.mjs in headless Chromium"
set +e
(
  cd "$HERE"
  # The key is read here, in the subshell, and handed to node through its environment.
  KMS_API_KEY="$(sed -n 's/^KMS_API_KEY=//p' "$TMP/companion.out" | head -n1)"
  export KMS_API_KEY
  env "${CHAIN_ENV[@]}" UI_ORIGIN="$ORIGIN" CHROMIUM="$CHROMIUM" ARTIFACTS_DIR="$ARTIFACTS" \
    DOCS_SCREENSHOT="$DOCS" node ui.test.mjs
)
rc=$?
set -e
kill -0 "$COMPANION_PID" 2>/dev/null || { echo "the companion died during the test" >&2; rc=1; }
if [ "$rc" -ne 0 ]; then
  echo "--- companion log (last 60 lines) ---" >&2
  tail -n 60 "$TMP/companion.log" >&2 || true
  die "browser test failed (screenshots and logs in $ARTIFACTS)"
fi
echo "browser test passed; screenshots in ${ARTIFACTS#"$ROOT"/}"
