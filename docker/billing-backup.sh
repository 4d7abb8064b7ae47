#!/usr/bin/env bash
# Backups of the billing database, and the restore drill that proves a backup can be used.
#
#   billing-backup.sh dump DIR             pg_dump (custom format) into DIR/billing-<UTC time>.dump,
#                                          then delete dumps in DIR older than KEEP_DAYS (default 35)
#   billing-backup.sh restore-drill FILE   restore FILE into a scratch database on the same server,
#                                          check it, print what it holds, drop the scratch database
#
# Connects with the libpq variables: PGHOST, PGPORT, PGUSER, PGPASSWORD, and PGDATABASE for the
# billing database. The drill needs a user that may create databases (the compose file's
# billing-backup service uses the server's superuser). Exits non-zero on any failure, so cron or
# a scheduler sees it.
set -euo pipefail

die() { echo "billing-backup: $*" >&2; exit 1; }
: "${PGDATABASE:?PGDATABASE (the billing database) is not set}"

dump() {
    local dir="${1:?usage: billing-backup.sh dump DIR}"
    mkdir -p "$dir"
    local file
    file="$dir/${PGDATABASE}-$(date -u +%Y%m%dT%H%M%SZ).dump"
    pg_dump --format=custom --compress=6 --no-password --file="$file.partial" "$PGDATABASE"
    mv "$file.partial" "$file"   # a dump is complete or absent: cron never leaves a half file behind
    echo "dumped $PGDATABASE to $file ($(du -h "$file" | cut -f1))"
    find "$dir" -maxdepth 1 -name "${PGDATABASE}-*.dump" -mtime +"${KEEP_DAYS:-35}" -print -delete
}

restore_drill() {
    local file="${1:?usage: billing-backup.sh restore-drill FILE}"
    [[ -f "$file" ]] || die "$file: no such file"
    pg_restore --list "$file" >/dev/null || die "$file: not a readable pg_dump archive"
    SCRATCH="${PGDATABASE}_restore_drill_$$"   # global: the EXIT trap runs after this function returns
    trap 'dropdb --if-exists --no-password "$SCRATCH" || true' EXIT
    createdb --no-password "$SCRATCH"
    pg_restore --no-owner --no-privileges --exit-on-error --no-password --dbname="$SCRATCH" "$file" \
        || die "$file: restore failed"
    # The restored copy must hold a complete schema and answer the questions finance asks.
    psql --no-psqlrc --quiet -v ON_ERROR_STOP=1 --no-password --dbname="$SCRATCH" --tuples-only --no-align --field-separator=' ' <<'SQL' \
        || die "$file: the restored database does not answer the checks"
SELECT 'migrations', count(*) FROM schema_migrations;
SELECT 'invoices', count(*) FROM invoices;
SELECT 'issued', count(*) FROM invoices WHERE invoice_number IS NOT NULL;
SELECT 'payments', count(*) FROM payments;
SELECT 'audit_events', count(*) FROM audit_events;
SELECT 'open_exceptions', count(*) FROM report_exceptions;
SELECT 'guard_triggers', count(*) FROM pg_trigger WHERE NOT tgisinternal;
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM schema_migrations) THEN
        RAISE EXCEPTION 'no schema migrations recorded';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE NOT tgisinternal) THEN
        RAISE EXCEPTION 'the triggers that keep issued invoices and the audit trail unchanged are missing';
    END IF;
END $$;
SQL
    echo "restore drill of $file: OK"
}

case "${1:-}" in
    dump) dump "${2:-}" ;;
    restore-drill) restore_drill "${2:-}" ;;
    *) die "usage: billing-backup.sh dump DIR | restore-drill FILE" ;;
esac
