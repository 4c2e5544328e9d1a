#!/usr/bin/env bash
# A throwaway PostgreSQL server for the database tests: runs COMMAND with KMS_TEST_POSTGRES_URL
# naming it, and stops and deletes it afterwards (also when COMMAND fails or is interrupted).
#
# The server is installed from Debian packages when no initdb/pg_ctl is found (on PATH or under
# /usr/lib/postgresql/<version>/bin), gets a cluster in a new temporary directory, owned by an
# unprivileged user (when run as root: `postgres` if it exists, else `nobody`), and listens only
# on 127.0.0.1, on a free port chosen now, with a random password (scram-sha-256). fsync is off:
# the cluster is thrown away at the end.
#
# usage: scripts/postgres.sh COMMAND [ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

[ $# -gt 0 ] || die "usage: scripts/postgres.sh COMMAND [ARGS...]"

# The directory holding initdb and pg_ctl, or nothing.
pg_bindir() {
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"
    return 0
  fi
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && echo "$d"
  return 0
}

BIN=$(pg_bindir)
if [ -z "$BIN" ]; then
  command -v apt-get >/dev/null 2>&1 || die "PostgreSQL (initdb, pg_ctl) is missing and there is no apt-get to install it"
  stage "Installing PostgreSQL (Debian packages)"
  # No default cluster: the package would otherwise create (and try to start) one on port 5432.
  # A drop-in of postgresql-common's createcluster.conf, which no package owns.
  as_root mkdir -p /etc/postgresql-common/createcluster.d
  echo 'create_main_cluster = false' |
    as_root tee /etc/postgresql-common/createcluster.d/kms-no-main-cluster.conf >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold postgresql >/dev/null
  BIN=$(pg_bindir)
  [ -n "$BIN" ] || die "PostgreSQL was installed but no initdb/pg_ctl was found"
fi

# Run as an unprivileged user (initdb refuses root).
RUN=()
PG_USER=$(id -un)
if [ "$(id -u)" -eq 0 ]; then
  if id postgres >/dev/null 2>&1; then PG_USER=postgres; else PG_USER=nobody; fi
  RUN=(runuser -u "$PG_USER" --)
fi

PGDIR=$(mktemp -d "${TMPDIR:-/tmp}/kms-postgres.XXXXXX")
chmod 755 "$PGDIR"
[ "$(id -u)" -ne 0 ] || chown "$PG_USER" "$PGDIR"
stop_postgres() {
  if [ -f "$PGDIR/data/postmaster.pid" ]; then
    "${RUN[@]}" "$BIN/pg_ctl" -D "$PGDIR/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$PGDIR"
}
trap stop_postgres EXIT

PASSWORD=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
printf '%s\n' "$PASSWORD" >"$PGDIR/pwfile"
[ "$(id -u)" -ne 0 ] || chown "$PG_USER" "$PGDIR/pwfile"
"${RUN[@]}" "$BIN/initdb" -D "$PGDIR/data" -U postgres --pwfile="$PGDIR/pwfile" \
  --auth-local=scram-sha-256 --auth-host=scram-sha-256 --no-locale -E UTF8 >"$PGDIR/initdb.log" 2>&1 ||
  { cat "$PGDIR/initdb.log" >&2; die "initdb failed"; }
rm -f "$PGDIR/pwfile"

# A free port on 127.0.0.1, chosen now; tried again if another process takes it first.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
started=0
for _ in 1 2 3 4 5; do
  PORT=$((20000 + RANDOM % 40000))
  port_free "$PORT" || continue
  if "${RUN[@]}" "$BIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/server.log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $PGDIR -c max_connections=300 -c fsync=off" \
    start >/dev/null; then
    started=1
    break
  fi
done
[ "$started" -eq 1 ] || { cat "$PGDIR/server.log" >&2 2>/dev/null || true; die "PostgreSQL did not start"; }

export KMS_TEST_POSTGRES_URL="postgres://postgres:$PASSWORD@127.0.0.1:$PORT/postgres"
echo "$("$BIN/pg_ctl" --version) on 127.0.0.1:$PORT (as $PG_USER, in $PGDIR)"
status=0
"$@" || status=$?
exit "$status"
