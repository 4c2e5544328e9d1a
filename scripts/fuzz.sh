#!/usr/bin/env bash
# Run each cargo-fuzz target for a short while (default 20 s each) from the
# committed seed corpus (fuzz/corpus/<target>), when cargo-fuzz is
# available. New corpus entries go to a temporary directory, so the tree
# stays clean; a crash leaves its input under fuzz/artifacts/<target>/ and
# fails the script.
#
# usage: scripts/fuzz.sh [SECONDS] [TARGET...]
#   FUZZ_REQUIRED=1  fail (instead of skipping) when cargo-fuzz is missing
#   FUZZ_INSTALL=1   install cargo-fuzz from crates.io first if missing
#
# cargo-fuzz needs nightly compiler flags (-Z sanitizer); on the stable
# toolchain they are enabled with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

secs=${1:-20}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(proto_decode ta_invoke jwt der hex userop_json intent_body)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  if [ "${FUZZ_INSTALL:-0}" = 1 ]; then
    stage "Installing cargo-fuzz"
    cargo install cargo-fuzz --locked
  elif [ "${FUZZ_REQUIRED:-0}" = 1 ]; then
    die "cargo-fuzz is not installed (cargo install cargo-fuzz)"
  else
    echo "cargo-fuzz not installed: skipping the fuzz runs (the proptest versions run in cargo test)"
    exit 0
  fi
fi

export RUSTC_BOOTSTRAP=1
# The fuzz workspace has its own target directory.
unset CARGO_TARGET_DIR
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

stage "Building the fuzz targets"
(cd fuzz && cargo fuzz build -O)

failed=()
for t in "${targets[@]}"; do
  stage "fuzz $t for ${secs}s"
  mkdir -p "$work/$t"
  if (cd fuzz && cargo fuzz run -O "$t" "$work/$t" "corpus/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 2>&1 | tail -n 12); then
    :
  else
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  die "fuzz targets failed: ${failed[*]} (inputs under fuzz/artifacts/)"
fi
echo "fuzz: ${#targets[@]} targets ran ${secs}s each without a failure"
