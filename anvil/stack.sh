#!/usr/bin/env bash
# anvil/stack.sh — a local ERC-4337 chain for tests and development.
#
# Usage: anvil/stack.sh [--out FILE] [--help]
#
# 1. installs the pinned toolchain (npm ci --ignore-scripts) unless node_modules is current;
# 2. uses the committed contracts/artifacts, or builds contracts/ with forge when they are stale;
# 3. starts anvil (automine) on a free port of 127.0.0.1;
# 4. deploys EntryPoint v0.7 and v0.8 at their canonical addresses through the deterministic
#    deployer, then SessionKeyValidator, one AgentAccountFactory per EntryPoint, Eip7702Account
#    (the implementation EOAs delegate to with EIP-7702; EntryPoint v0.8) and TestToken (an ERC-20
#    with free minting, for token-cap tests and the demo);
# 5. starts the Alto bundler (one instance, both EntryPoints) on a free port (Alto listens on
#    0.0.0.0, always);
# 6. once both answer JSON-RPC, writes FILE (default anvil/.stack/stack.json) atomically:
#      rpcUrl, bundlerUrl, bundlerUrlV08, chainId, entryPointV07, entryPointV08,
#      sessionKeyValidator, accountFactoryV07, accountFactoryV08, eip7702Account, testToken,
#      deployerPrivateKey, anvilPid, bundlerPid
# 7. stays in the foreground until SIGINT/SIGTERM or until its parent process dies, then stops
#    anvil and Alto by PID and removes FILE.
#
# Each run has its own state directory anvil/.stack/<pid>/ with anvil.log and alto.log.
set -euo pipefail

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }

OUT=""
while [[ $# -gt 0 ]]; do
    case "$1" in
    --out)
        [[ $# -ge 2 ]] || { echo "error: --out needs a file" >&2; exit 2; }
        OUT="$2"
        shift 2
        ;;
    --out=*)
        OUT="${1#--out=}"
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        echo "error: unknown argument '$1' (see --help)" >&2
        exit 2
        ;;
    esac
done

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

PARENT_PID=$PPID
[[ "$PARENT_PID" != 1 ]] || echo "[anvil] warning: started without a parent process (ppid 1): stops only on SIGINT/SIGTERM" >&2
OUT="${OUT:-$KMS_ANVIL_DIR/.stack/stack.json}"
mkdir -p "$(dirname "$OUT")"
OUT="$(cd "$(dirname "$OUT")" && pwd -P)/$(basename "$OUT")"
STATE_DIR="$KMS_ANVIL_DIR/.stack/$$"

# anvil's well-known dev keys (mnemonic "test test … junk"): #0 deploys and funds tests, #1 is
# Alto's executor, #2 Alto's utility account.
DEPLOYER_KEY=0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80
EXECUTOR_KEY=0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d
UTILITY_KEY=0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a
CHAIN_ID=31337

CREATE2_DEPLOYER=0x4e59b44847b379578588920ca78fbf26c0b4956c
ENTRY_POINT_V07=0x0000000071727De22E5E9d8BAf0edAc6f37da032
ENTRY_POINT_V08=0x4337084D9E255Ff0702461CF8895CE9E3b5Ff108
SALT_V07=0x90d8084deab30c2a37c45e8d47f49f2f7965183cb6990a98943ef94940681de3
SALT_V08=0x0a59dbff790c23c976a548690c27297883cc66b4c67024f9117b0238995e35e9

ANVIL_PID=""
ALTO_PID=""
WROTE_OUT=0

stop_pid() {
    local pid="$1" name="$2"
    [[ -n "$pid" ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kms_log "$name (pid $pid) did not stop on SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    stop_pid "$ALTO_PID" alto
    stop_pid "$ANVIL_PID" anvil
    if [[ "$WROTE_OUT" == 1 ]]; then
        rm -f "$OUT"
    fi
    rm -f "$OUT.tmp.$$"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

kms_require curl jq
kms_ensure_packages

# ---------------------------------------------------------------- contracts
ARTIFACTS="$KMS_CONTRACTS_DIR/artifacts"
if kms_artifacts_fresh; then
    bytecode() { jq -r '.bytecode' "$ARTIFACTS/$1.json"; }
else
    kms_log "a contracts/ Solidity source changed after contracts/artifacts: building with forge and deploying the fresh build"
    kms_log "(run anvil/build-contracts.sh to refresh the committed artifacts)"
    (cd "$KMS_CONTRACTS_DIR" && kms_locked "$KMS_BIN/forge" build --skip test --skip "test/**" --quiet)
    bytecode() { jq -r '.bytecode.object' "$KMS_CONTRACTS_DIR/out/$1.sol/$1.json"; }
fi

# ---------------------------------------------------------------- helpers
free_port() {
    node -e 'const s=require("net").createServer();s.listen(0,"0.0.0.0",()=>{console.log(s.address().port);s.close()})'
}

# rpc URL METHOD PARAMS_JSON -> prints .result, fails on error or no answer
rpc() {
    local body reply
    body="$(jq -cn --arg m "$2" --argjson p "$3" '{jsonrpc:"2.0",id:1,method:$m,params:$p}')"
    reply="$(curl -sf --max-time 5 -H 'content-type: application/json' -d "$body" "$1")" || return 1
    jq -e 'has("result")' >/dev/null <<<"$reply" || return 1
    jq -r '.result' <<<"$reply"
}

wait_rpc() { # URL METHOD NAME PID LOG TIMEOUT_S
    local deadline=$((SECONDS + $6))
    until rpc "$1" "$2" '[]' >/dev/null 2>&1; do
        kill -0 "$4" 2>/dev/null || { tail -n 30 "$5" >&2; die "$3 exited during start-up (log: $5)"; }
        ((SECONDS < deadline)) || { tail -n 30 "$5" >&2; die "$3 did not answer within $6 s (log: $5)"; }
        sleep 0.1
    done
}

CAST=("$KMS_BIN/cast")

# send_tx TO DATA -> waits for the receipt (automine), fails unless status is 1
send_tx() {
    local receipt
    receipt="$("${CAST[@]}" send --rpc-url "$RPC_URL" --private-key "$DEPLOYER_KEY" --json "$1" "$2")"
    [[ "$(jq -r '.status' <<<"$receipt")" == "0x1" ]] || die "transaction to $1 failed: $receipt"
}

# deploy NAME CONSTRUCTOR_ARGS_HEX -> prints the new contract's address
deploy() {
    local receipt
    receipt="$("${CAST[@]}" send --rpc-url "$RPC_URL" --private-key "$DEPLOYER_KEY" --json \
        --create "$(bytecode "$1")${2#0x}")"
    [[ "$(jq -r '.status' <<<"$receipt")" == "0x1" ]] || die "deploying $1 failed: $receipt"
    jq -r '.contractAddress' <<<"$receipt"
}

require_code() { # ADDRESS NAME
    local code
    code="$(rpc "$RPC_URL" eth_getCode "[\"$1\",\"latest\"]")"
    [[ "$code" != "0x" && -n "$code" ]] || die "$2: no code at $1 after deployment"
}

deploy_entry_point() { # ARTIFACT SALT ADDRESS NAME
    local creation
    creation="$(jq -r '.bytecode' "$1")"
    send_tx "$CREATE2_DEPLOYER" "$2${creation#0x}"
    require_code "$3" "$4"
}

# ---------------------------------------------------------------- anvil
# State dirs of earlier runs are kept for their logs; those older than a day are pruned.
find "$KMS_ANVIL_DIR/.stack" -mindepth 1 -maxdepth 1 -type d -mtime +0 -exec rm -rf {} + 2>/dev/null || true
mkdir -p "$STATE_DIR"
ANVIL_LOG="$STATE_DIR/anvil.log"
ALTO_LOG="$STATE_DIR/alto.log"
started=$SECONDS

ANVIL_PORT="$(free_port)"
RPC_URL="http://127.0.0.1:$ANVIL_PORT"
"$KMS_BIN/anvil" --host 127.0.0.1 --port "$ANVIL_PORT" --chain-id "$CHAIN_ID" >"$ANVIL_LOG" 2>&1 &
ANVIL_PID=$!
kms_log "anvil pid $ANVIL_PID on $RPC_URL, log $ANVIL_LOG"
wait_rpc "$RPC_URL" eth_chainId anvil "$ANVIL_PID" "$ANVIL_LOG" 30
require_code "$CREATE2_DEPLOYER" "deterministic deployer"

# ---------------------------------------------------------------- deployments
deploy_entry_point "$KMS_NODE_MODULES/@account-abstraction/contracts/artifacts/EntryPoint.json" \
    "$SALT_V07" "$ENTRY_POINT_V07" "EntryPoint v0.7"
deploy_entry_point "$KMS_NODE_MODULES/aa-contracts-v08/artifacts/EntryPoint.json" \
    "$SALT_V08" "$ENTRY_POINT_V08" "EntryPoint v0.8"
VALIDATOR="$(deploy SessionKeyValidator "")"
FACTORY_V07="$(deploy AgentAccountFactory "$("${CAST[@]}" abi-encode 'f(address,address)' "$ENTRY_POINT_V07" "$VALIDATOR")")"
FACTORY_V08="$(deploy AgentAccountFactory "$("${CAST[@]}" abi-encode 'f(address,address)' "$ENTRY_POINT_V08" "$VALIDATOR")")"
TEST_TOKEN="$(deploy TestToken "")"
# Last, so that the addresses deployed before it (deployer nonces) stay what they were.
EIP7702_ACCOUNT="$(deploy Eip7702Account "")"
for a in "$VALIDATOR" "$FACTORY_V07" "$FACTORY_V08" "$EIP7702_ACCOUNT" "$TEST_TOKEN"; do
    require_code "$a" "project contract"
done
kms_log "deployed: validator $VALIDATOR, factory v0.7 $FACTORY_V07, factory v0.8 $FACTORY_V08, EIP-7702 account $EIP7702_ACCOUNT, test token $TEST_TOKEN"

# ---------------------------------------------------------------- alto
ALTO_PORT="$(free_port)"
BUNDLER_URL="http://127.0.0.1:$ALTO_PORT"
node "$KMS_NODE_MODULES/@pimlico/alto/esm/cli/alto.js" \
    --entrypoints "$ENTRY_POINT_V07,$ENTRY_POINT_V08" \
    --executor-private-keys "$EXECUTOR_KEY" \
    --utility-private-key "$UTILITY_KEY" \
    --rpc-url "$RPC_URL" \
    --port "$ALTO_PORT" \
    --safe-mode false \
    --log-level warn \
    --block-time 100 \
    --min-bundle-interval 10 \
    --max-bundle-interval 100 \
    --gas-price-refresh-interval 0 \
    >"$ALTO_LOG" 2>&1 &
ALTO_PID=$!
kms_log "alto pid $ALTO_PID on $BUNDLER_URL (Alto binds 0.0.0.0:$ALTO_PORT), log $ALTO_LOG"
wait_rpc "$BUNDLER_URL" eth_supportedEntryPoints alto "$ALTO_PID" "$ALTO_LOG" 60
supported="$(rpc "$BUNDLER_URL" eth_supportedEntryPoints '[]' | jq -r 'map(ascii_downcase) | join(",")')"
for ep in "$ENTRY_POINT_V07" "$ENTRY_POINT_V08"; do
    [[ ",$supported," == *",${ep,,},"* ]] || die "alto does not list $ep (it lists: $supported)"
done

# ---------------------------------------------------------------- stack.json
jq -n \
    --arg rpcUrl "$RPC_URL" \
    --arg bundlerUrl "$BUNDLER_URL" \
    --argjson chainId "$CHAIN_ID" \
    --arg entryPointV07 "$ENTRY_POINT_V07" \
    --arg entryPointV08 "$ENTRY_POINT_V08" \
    --arg sessionKeyValidator "$("${CAST[@]}" to-check-sum-address "$VALIDATOR")" \
    --arg accountFactoryV07 "$("${CAST[@]}" to-check-sum-address "$FACTORY_V07")" \
    --arg accountFactoryV08 "$("${CAST[@]}" to-check-sum-address "$FACTORY_V08")" \
    --arg eip7702Account "$("${CAST[@]}" to-check-sum-address "$EIP7702_ACCOUNT")" \
    --arg testToken "$("${CAST[@]}" to-check-sum-address "$TEST_TOKEN")" \
    --arg deployerPrivateKey "$DEPLOYER_KEY" \
    --argjson anvilPid "$ANVIL_PID" \
    --argjson bundlerPid "$ALTO_PID" \
    '{rpcUrl: $rpcUrl, bundlerUrl: $bundlerUrl, bundlerUrlV08: $bundlerUrl, chainId: $chainId,
      entryPointV07: $entryPointV07, entryPointV08: $entryPointV08,
      sessionKeyValidator: $sessionKeyValidator, accountFactoryV07: $accountFactoryV07,
      accountFactoryV08: $accountFactoryV08, eip7702Account: $eip7702Account, testToken: $testToken,
      deployerPrivateKey: $deployerPrivateKey,
      anvilPid: $anvilPid, bundlerPid: $bundlerPid}' >"$OUT.tmp.$$"
mv "$OUT.tmp.$$" "$OUT"
WROTE_OUT=1
kms_log "ready in $((SECONDS - started)) s: $OUT"
kms_log "logs: $ANVIL_LOG $ALTO_LOG"
echo "$OUT"

# ---------------------------------------------------------------- foreground
while true; do
    if [[ "$(awk '/^PPid:/ {print $2}' /proc/$$/status)" != "$PARENT_PID" ]] || ! kill -0 "$PARENT_PID" 2>/dev/null; then
        kms_log "parent process $PARENT_PID is gone; stopping"
        exit 0
    fi
    kill -0 "$ANVIL_PID" 2>/dev/null || die "anvil (pid $ANVIL_PID) exited; see $ANVIL_LOG"
    kill -0 "$ALTO_PID" 2>/dev/null || die "alto (pid $ALTO_PID) exited; see $ALTO_LOG"
    sleep 1 &
    wait $! || true
done
