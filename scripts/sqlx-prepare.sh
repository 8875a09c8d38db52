#!/usr/bin/env bash
# Writes the offline data of the api's compile-checked queries (`sqlx::query!`
# and friends in api/src/store/) to api/.sqlx, so a build needs no database.
# With --check, writes it to a scratch folder and fails when api/.sqlx differs
# (a query or the schema changed without the data being refreshed).
#
# The macros check each query against a fresh database migrated from
# migrations/ and save what they learned where SQLX_OFFLINE_DIR points.
# Expects PostgreSQL up (scripts/services.sh).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/syncfleet-target}"
check=false
[[ "${1:-}" == "--check" ]] && check=true

database="sf_test_sqlx_$$"
out="$(mktemp -d)"
cleanup() {
  psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$database\" WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$out"
}
trap cleanup EXIT

psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE \"$database\"" >/dev/null
for migration in "$repo"/migrations/*.sql; do
  psql -h 127.0.0.1 -U postgres -d "$database" -q -v ON_ERROR_STOP=1 -f "$migration" >/dev/null
done

# The macros run again only when their crate is rebuilt.
touch "$repo"/api/src/store/*.rs
DATABASE_URL="postgres://postgres@127.0.0.1:5432/$database" SQLX_OFFLINE_DIR="$out" \
  cargo build --quiet --locked -p syncfleet-api --lib
# The next offline build must not reuse what this online one compiled.
touch "$repo"/api/src/store/*.rs

if $check; then
  if ! diff -r "$out" "$repo/api/.sqlx" >/dev/null; then
    echo "sqlx-prepare: api/.sqlx is out of date: run scripts/sqlx-prepare.sh and commit it" >&2
    diff -r "$out" "$repo/api/.sqlx" >&2 || true
    exit 1
  fi
  echo "sqlx-prepare: api/.sqlx is up to date"
else
  rm -rf "$repo/api/.sqlx"
  cp -r "$out" "$repo/api/.sqlx"
  echo "sqlx-prepare: wrote $(ls "$repo/api/.sqlx" | wc -l) queries to api/.sqlx"
fi
