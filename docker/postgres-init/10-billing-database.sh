#!/usr/bin/env bash
# Creates the billing database and its owner beside Airflow's metadata database.
#
# The postgres image runs this once, when its data volume is first initialised (an existing volume
# keeps what it has: create the role and database by hand there, or start from a new volume).
# The schema itself is not made here: `invoiceflow db upgrade` in the airflow-init service applies
# the numbered migrations, on first start and after every upgrade.
#
# Needs BILLING_DB_USER, BILLING_DB_PASSWORD and BILLING_DB_NAME; psql connects as POSTGRES_USER.
# Idempotent, so it can also be run by hand against an existing server.
set -euo pipefail

: "${BILLING_DB_USER:?BILLING_DB_USER is not set}"
: "${BILLING_DB_PASSWORD:?BILLING_DB_PASSWORD is not set}"
: "${BILLING_DB_NAME:?BILLING_DB_NAME is not set}"

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
    -v user="$BILLING_DB_USER" -v password="$BILLING_DB_PASSWORD" -v dbname="$BILLING_DB_NAME" <<'SQL'
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'user') AS create_role \gset
\if :create_role
CREATE ROLE :"user" LOGIN PASSWORD :'password';
\else
ALTER ROLE :"user" LOGIN PASSWORD :'password';
\endif
SELECT NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'dbname') AS create_db \gset
\if :create_db
CREATE DATABASE :"dbname" OWNER :"user" ENCODING 'UTF8' TEMPLATE template0;
\endif
-- Only the owner works in the billing database; reporting tools get their own read-only role.
REVOKE ALL ON DATABASE :"dbname" FROM PUBLIC;
SQL
echo "billing database ${BILLING_DB_NAME} owned by ${BILLING_DB_USER} is ready"
