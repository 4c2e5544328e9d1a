# shellcheck shell=bash
# The one library of the project's shell scripts (test.sh, run.sh, scripts/*.sh,
# anvil/*.sh, e2e/browser/run.sh). Source it; it defines paths and functions and
# changes nothing by itself.

KMS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
KMS_ANVIL_DIR="$KMS_ROOT/anvil"
KMS_CONTRACTS_DIR="$KMS_ROOT/contracts"
KMS_NODE_MODULES="$KMS_ANVIL_DIR/node_modules"
KMS_BIN="$KMS_NODE_MODULES/.bin"
KMS_STAMP="$KMS_NODE_MODULES/.kms-lock-sha256"
KMS_LOCK_FILE="$KMS_ANVIL_DIR/.cache/install.lock"

# ---------------------------------------------------------------- messages

# Print a stage banner, with the seconds since the calling script started.
stage() { printf '\n==> [%ss] %s\n' "$SECONDS" "$*"; }

# Fail with a message.
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# A progress line of the local chain's scripts (stderr, so their stdout stays machine-readable).
kms_log() { echo "[anvil] $*" >&2; }

# ---------------------------------------------------------------- tools

# Fails clearly when a required command is missing (KMS_REQUIRE_HINT, if set, says how to get it).
kms_require() {
    local cmd
    for cmd in "$@"; do
        command -v "$cmd" >/dev/null 2>&1 || die "'$cmd' is required but not installed${KMS_REQUIRE_HINT:+ ($KMS_REQUIRE_HINT)}"
    done
}

# Run a command with sudo only when not root.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Install Debian packages that are missing (by the command they provide).
# usage: need_debs cmd:package [cmd:package ...]
need_debs() {
    local missing=() pair cmd pkg
    for pair in "$@"; do
        cmd=${pair%%:*}
        pkg=${pair#*:}
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
    stage "Installing Debian packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Checks (installs nothing) that Node.js >= 20 and npm are there.
kms_require_node() {
    command -v node >/dev/null 2>&1 ||
        die "node is not installed: Node.js >= 20 and npm are needed (Debian: apt-get install nodejs npm)"
    command -v npm >/dev/null 2>&1 ||
        die "npm is not installed: it is needed to install the pinned toolchain (Debian: apt-get install npm)"
    local major
    major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
    [[ "$major" -ge 20 ]] || die "Node.js >= 20 is needed, found $(node --version 2>/dev/null || echo none)"
}

# Node.js >= 20 and npm, installed with apt-get when missing (run.sh, test.sh, the browser test).
need_node() {
    need_debs node:nodejs npm:npm
    kms_require_node
}

# ---------------------------------------------------------------- the local chain's toolchain

# Runs `npm ci --ignore-scripts` in anvil/ unless node_modules matches package-lock.json (a stamp
# file in node_modules holds the lock file's SHA-256). Serialised with flock, so concurrent callers
# (parallel tests) install once.
kms_ensure_packages() {
    kms_require_node
    kms_require flock sha256sum
    mkdir -p "$(dirname "$KMS_LOCK_FILE")"
    local want
    want="$(sha256sum "$KMS_ANVIL_DIR/package-lock.json" | cut -d' ' -f1)"
    if [[ -f "$KMS_STAMP" && "$(cat "$KMS_STAMP")" == "$want" ]]; then
        return 0
    fi
    (
        flock 9
        if [[ -f "$KMS_STAMP" && "$(cat "$KMS_STAMP")" == "$want" ]]; then
            exit 0
        fi
        kms_log "installing the pinned toolchain: npm ci --ignore-scripts (about 580 MB, a minute)"
        local start=$SECONDS
        (cd "$KMS_ANVIL_DIR" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) >&2 ||
            die "npm ci failed in $KMS_ANVIL_DIR"
        echo "$want" >"$KMS_STAMP"
        kms_log "npm ci done in $((SECONDS - start)) s"
    ) 9>"$KMS_LOCK_FILE"
}

# Runs a command while holding the install lock (so forge builds do not race one another).
kms_locked() {
    mkdir -p "$(dirname "$KMS_LOCK_FILE")"
    (
        flock 9
        "$@"
    ) 9>"$KMS_LOCK_FILE"
}

# Prints "<sha256>  <path>.sol" for every product Solidity source of contracts/ (its top level,
# interfaces/, testing/: every .sol except under the top-level directories below, hidden entries and
# symbolic links; the same set as NOT_SOURCES in contracts/build_support/manifest.rs), sorted.
kms_source_hashes() {
    (cd "$KMS_CONTRACTS_DIR" && find . -mindepth 1 \( -name '.*' -o -regex '\./\(artifacts\|build_support\|builder\|cache\|node_modules\|out\|src\|target\|test\)' \) -prune \
        -o -type f -name '*.sol' -print | sed 's#^\./##' | LC_ALL=C sort | xargs sha256sum)
}

# Exit status 0 when contracts/artifacts/sources.sha256 matches the product sources exactly.
kms_artifacts_fresh() {
    local manifest="$KMS_CONTRACTS_DIR/artifacts/sources.sha256"
    [[ -f "$manifest" ]] && diff -q <(kms_source_hashes) "$manifest" >/dev/null
}
