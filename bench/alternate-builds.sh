#!/usr/bin/env bash
# Compare companion builds that cannot share one database, in one run: plain `loadgen` runs,
# each over its own fresh data, the builds alternating for ROUNDS rounds; prints each run's
# figures and, per build, the companion's CPU per signature over all its rounds and its ratio
# to the first build's.
#
# `loadgen --compare-companions` restarts the builds over one database and one ta-sim, which
# is the better comparison when it works; a build from before a schema migration refuses the
# newer database ("migration N was previously applied but is missing"), so for those use this.
#
# usage: bench/alternate-builds.sh ROUNDS DIR1 DIR2 [DIR...] [-- LOADGEN_ARGS...]
#   each DIR holds a `companion` and a `ta-sim` (loadgen --bin-dir); DIR1 is the baseline.
#   LOADGEN (default: target/release/loadgen, or $CARGO_TARGET_DIR's) runs each measurement;
#   default LOADGEN_ARGS: -d 8 --warmup 2 --raw-secs 1
#
# example (the build before a migration against main):
#   git worktree add /tmp/old <commit> && (cd /tmp/old && cargo build --release -p kms-companion)
#   mkdir -p /tmp/cmp/old /tmp/cmp/new
#   cp /tmp/old/target/release/companion target/release/ta-sim /tmp/cmp/old/
#   cp target/release/companion target/release/ta-sim /tmp/cmp/new/
#   bench/alternate-builds.sh 4 /tmp/cmp/old /tmp/cmp/new
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 3 ]; then
  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
rounds=$1
shift
dirs=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  dirs+=("$1")
  shift
done
[ "${1:-}" = "--" ] && shift
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(-d 8 --warmup 2 --raw-secs 1)
loadgen=${LOADGEN:-${CARGO_TARGET_DIR:-target}/release/loadgen}
[ -x "$loadgen" ] || { echo "no loadgen at $loadgen (cargo build --release -p kms-loadgen)" >&2; exit 2; }
for d in "${dirs[@]}"; do
  [ -x "$d/companion" ] && [ -x "$d/ta-sim" ] || { echo "$d lacks companion or ta-sim" >&2; exit 2; }
done

echo "# $(date -u '+%F %T') UTC; load average before: $(cat /proc/loadavg)"
echo "# $rounds rounds; builds: ${dirs[*]}; loadgen ${args[*]}"
runs=$(mktemp)
trap 'rm -f "$runs"' EXIT
for r in $(seq 1 "$rounds"); do
  for d in "${dirs[@]}"; do
    echo "== round $r $d"
    out=$("$loadgen" --bin-dir "$d" "${args[@]}" 2>&1 | grep -E 'throughput|latency|CPU \(cores') || {
      echo "loadgen failed for $d" >&2
      exit 1
    }
    echo "$out"
    # build, throughput, p50, p99, companion cores
    echo "$out" | awk -v d="$d" '
      /throughput/ { t = $2 }
      /latency/ { p50 = $3; p99 = $9 }
      /CPU \(cores/ { c = $5 }
      END { print d, t, p50, p99, c }' >> "$runs"
  done
done
echo "# load average after: $(cat /proc/loadavg)"
echo
echo "companion CPU per signature (all rounds: cores x seconds / signatures), ratio to ${dirs[0]}:"
awk -v base="${dirs[0]}" '
  { n[$1]++; t[$1] += $2; c[$1] += $5; p99[$1] += $4; order[$1] = order[$1] ? order[$1] : NR }
  END {
    b = c[base] / t[base]
    for (d in n) {
      us = 1e6 * c[d] / t[d]
      printf "  %-28s %6.1f µs  ratio %.3f  throughput %6.0f/s  mean p99 %.2f ms  (%d runs)\n",
        d, us, (c[d] / t[d]) / b, t[d] / n[d], p99[d] / n[d], n[d]
    }
  }' "$runs"
