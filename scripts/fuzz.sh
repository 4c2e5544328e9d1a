#!/usr/bin/env bash
# Run each cargo-fuzz target for a short while (default 20 s each) from the
# committed seed corpus (fuzz/corpus/<target>), when cargo-fuzz is
# available. New corpus entries go to a temporary directory, so the tree
# stays clean; a crash leaves its input under fuzz/artifacts/<target>/ and
# fails the script.
#
# usage: scripts/fuzz.sh [SECONDS] [TARGET...]
#   FUZZ_SECS=N      seconds per target when no SECONDS argument is given
#   FUZZ_REQUIRED=1  fail (instead of skipping) when cargo-fuzz is missing
#   FUZZ_INSTALL=1   install cargo-fuzz from crates.io first if missing
#
# cargo-fuzz needs nightly compiler flags (-Z sanitizer): the script uses
# the nightly toolchain when rustup has one, else the stable compiler with
# RUSTC_BOOTSTRAP=1. It never claims a run that did not happen: without
# cargo-fuzz it says so and exits 0 (the proptest versions of the same
# properties run in `cargo test -p kms-props`).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

secs=${1:-${FUZZ_SECS:-20}}
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
    echo "fuzz: SKIPPED, NOT RUN: cargo-fuzz is not installed (cargo install cargo-fuzz)."
    echo "fuzz: the proptest versions of the same properties run in 'cargo test -p kms-props'."
    exit 0
  fi
fi

fuzz=(cargo fuzz)
if command -v rustup >/dev/null 2>&1 && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
  echo "fuzz: using the nightly toolchain ($(rustc +nightly --version))"
else
  export RUSTC_BOOTSTRAP=1
  echo "fuzz: no nightly toolchain; stable rustc with RUSTC_BOOTSTRAP=1 ($(rustc --version))"
fi
# The fuzz workspace has its own target directory.
unset CARGO_TARGET_DIR
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# cargo fuzz has no --locked: check the committed lock file first, so a stale one fails here
# instead of being rewritten silently by the build.
cargo metadata --manifest-path fuzz/Cargo.toml --locked --format-version 1 >/dev/null ||
  die "fuzz/Cargo.lock is out of date: run 'cargo update -w --manifest-path fuzz/Cargo.toml' and commit it"

stage "Building the fuzz targets"
(cd fuzz && "${fuzz[@]}" build -O)

failed=()
for t in "${targets[@]}"; do
  stage "fuzz $t for ${secs}s"
  mkdir -p "$work/$t"
  if (cd fuzz && "${fuzz[@]}" run -O "$t" "$work/$t" "corpus/$t" -- \
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
