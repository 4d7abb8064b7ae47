# Sourced by `make test`: export INVOICEFLOW_TEST_PG_URL for a PostgreSQL server the tests may use.
# Uses the server on 127.0.0.1:5432 when one answers; otherwise starts a throw-away cluster from the
# Debian package (installing postgresql if it is missing) on 127.0.0.1:54329, trust auth, under
# /tmp/invoiceflow-pg. The tests create and drop their own databases on it.

_pg_try() { "$1"/pg_isready -q -h 127.0.0.1 -p "$2" 2>/dev/null; }

_pg_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

if [ -n "${INVOICEFLOW_TEST_PG_URL:-}" ]; then
  echo "PostgreSQL for tests: ${INVOICEFLOW_TEST_PG_URL} (given)"
else
  bindir=$(_pg_bindir)
  if [ -z "$bindir" ]; then
    echo "PostgreSQL is not installed: installing the Debian package postgresql"
    ${SUDO:-$( [ "$(id -u)" = 0 ] || echo sudo )} apt-get update -qq
    ${SUDO:-$( [ "$(id -u)" = 0 ] || echo sudo )} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    bindir=$(_pg_bindir)
  fi
  if _pg_try "$bindir" 5432; then
    export INVOICEFLOW_TEST_PG_URL="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    echo "PostgreSQL for tests: the server on 127.0.0.1:5432"
  else
    pgdir=/tmp/invoiceflow-pg
    run=""
    if [ "$(id -u)" = 0 ]; then run="runuser -u postgres --"; fi
    if [ ! -f "$pgdir/PG_VERSION" ]; then
      mkdir -p "$pgdir" && [ -z "$run" ] || chown postgres "$pgdir"
      $run "$bindir/initdb" -D "$pgdir" -U postgres --auth=trust >/dev/null
    fi
    _pg_try "$bindir" 54329 || $run "$bindir/pg_ctl" -D "$pgdir" -l "$pgdir/server.log" -w \
      -o "-p 54329 -c listen_addresses=127.0.0.1 -k /tmp -c fsync=off" start >/dev/null
    export INVOICEFLOW_TEST_PG_URL="postgresql+psycopg://postgres@127.0.0.1:54329/postgres"
    echo "PostgreSQL for tests: a throw-away cluster in $pgdir on 127.0.0.1:54329"
  fi
fi
