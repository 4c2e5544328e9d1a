#!/usr/bin/env bash
# Produce every figure of BENCHMARKS.md in one go, on a quiet machine:
#
#   1. criterion benches (each prints its ratio against a baseline measured
#      in the same run): SignAgentUserOp via the TA core vs raw k256; JWT
#      verification (TA) vs host parse; BIP32 and signing cold vs cached;
#      userOpHash v0.7 / v0.8 vs one keccak;
#   2. the sign-agent load driver (release companion + ta-sim, N agents
#      created through the API, C connections for T seconds; raw k256
#      baseline before and after, same cores), then the cost of the audit
#      log's durability: the same load with --audit-durability queued
#      (baseline), commit and sync, alternating, ratios to the baseline;
#   3. the intent pipeline on anvil + Alto (100 intents), then many agents at
#      once (50 agents over 5 accounts, 10 intents each, after one agent alone).
#
# usage: bench/run-all.sh [OUTDIR]     (default: bench/results/<date>)
#   AGENTS=200 CONCURRENCY=32 DURATION=20 INTENTS=100 SKIP_PIPELINE=1
#   PIPELINE_AGENTS=50 PIPELINE_ACCOUNTS=5 PIPELINE_AGENT_INTENTS=10
#   AUDIT_DURATION=10 AUDIT_ROUNDS=3
# Everything is written to OUTDIR/*.txt; the summary is OUTDIR/summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
export CARGO_TERM_COLOR=never

{
  echo "date:    $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
  echo "cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "cores:   $(nproc)"
  echo "memory:  $(free -g | awk '/Mem:/ {print $2 " GiB"}')"
  echo "rustc:   $(rustc --version)"
  echo "load before: $(cat /proc/loadavg)"
} | tee "$out/machine.txt"

echo "==> building (release benches, loadgen, companion, ta-sim)"
cargo build --release --locked -p kms-companion -p kms-ta-sim -p kms-loadgen --bins
cargo bench --locked --no-run -p kms-ta --features test-seed >/dev/null 2>&1 || true
cargo bench --locked --no-run -p kms-loadgen >/dev/null 2>&1 || true

echo "==> criterion: SignAgentUserOp via the TA core vs raw k256"
cargo bench --locked -p kms-ta --features test-seed --bench sign_agent 2>&1 | tee "$out/bench_sign_agent.txt"
echo "==> criterion: JWT verification, BIP32 and signing cold vs cached"
cargo bench --locked -p kms-ta --features test-seed --bench ta_paths 2>&1 | tee "$out/bench_ta_paths.txt"
echo "==> criterion: userOpHash v0.7 / v0.8"
cargo bench --locked -p kms-loadgen --bench userop_hash 2>&1 | tee "$out/bench_userop_hash.txt"

echo "==> load driver"
echo "load before loadgen: $(cat /proc/loadavg)" | tee "$out/loadgen.txt"
"${CARGO_TARGET_DIR:-target}/release/loadgen" \
  --bin-dir "${CARGO_TARGET_DIR:-target}/release" \
  --agents "${AGENTS:-200}" --concurrency "${CONCURRENCY:-32}" --duration "${DURATION:-20}" \
  --json "$out/loadgen.json" 2>&1 | tee -a "$out/loadgen.txt"

echo "==> load driver: audit durability (queued baseline, commit, sync; alternating rounds)"
echo "load before loadgen (audit): $(cat /proc/loadavg)" | tee "$out/loadgen-audit.txt"
"${CARGO_TARGET_DIR:-target}/release/loadgen" \
  --bin-dir "${CARGO_TARGET_DIR:-target}/release" \
  --agents "${AGENTS:-200}" --concurrency "${CONCURRENCY:-32}" \
  --duration "${AUDIT_DURATION:-10}" --rounds "${AUDIT_ROUNDS:-3}" \
  --compare-audit queued,commit,sync \
  --json "$out/loadgen-audit.json" 2>&1 | tee -a "$out/loadgen-audit.txt"

if [ "${SKIP_PIPELINE:-0}" != 1 ]; then
  echo "==> intent pipeline on anvil + Alto"
  "${CARGO_TARGET_DIR:-target}/release/pipeline" --intents "${INTENTS:-100}" 2>&1 | tee "$out/pipeline.txt"
  echo "==> many agents at once on anvil + Alto"
  "${CARGO_TARGET_DIR:-target}/release/pipeline" --agents "${PIPELINE_AGENTS:-50}" \
    --accounts "${PIPELINE_ACCOUNTS:-5}" --intents "${PIPELINE_AGENT_INTENTS:-10}" --poll-ms 250 \
    2>&1 | tee "$out/pipeline-agents.txt"
fi

{
  echo "# summary ($(date -u '+%Y-%m-%d %H:%M UTC'))"
  cat "$out/machine.txt"
  grep -h -E "ratio|userOpHash|JWT:|BIP32:|SignAgentUserOp" "$out"/bench_*.txt | grep -v "^Benchmarking" || true
  grep -h -E "setup:|raw k256|sign-agent:|throughput|latency|errors by status|peak RSS|CPU|ratio|load average" "$out/loadgen.txt" || true
  grep -h -E "audit durability|^  (queued|commit|sync) |ratio to" "$out/loadgen-audit.txt" || true
  [ -f "$out/pipeline.txt" ] && grep -h -E "^pipeline|^  " "$out/pipeline.txt" || true
  [ -f "$out/pipeline-agents.txt" ] && grep -h -E "^pipeline|^  " "$out/pipeline-agents.txt" || true
  echo "load after: $(cat /proc/loadavg)"
} | tee "$out/summary.txt"
echo "results in $out"
