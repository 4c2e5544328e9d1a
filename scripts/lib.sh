# Shared helpers for the project's scripts. Source it; do not run it.

# Print a stage banner, with the seconds since the calling script started.
stage() { printf '\n==> [%ss] %s\n' "$SECONDS" "$*"; }

# Fail with a message.
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Run a command with sudo only when not root.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Install Debian packages that are missing (by the command they provide).
# usage: need_debs cmd:package [cmd:package ...]
need_debs() {
  local missing=() pair cmd pkg
  for pair in "$@"; do
    cmd=${pair%%:*}; pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
  stage "Installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Node.js >= 20 and npm, for the local chain tools.
need_node() {
  need_debs node:nodejs npm:npm
  local major
  major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
  [ "$major" -ge 20 ] || die "Node.js >= 20 is required (found $(node --version 2>/dev/null || echo none))"
}
