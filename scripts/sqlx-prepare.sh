#!/usr/bin/env bash
# Writes the offline data of the compile-checked queries (`sqlx::query!` and
# friends) of every crate that has them (common, api, worker, scheduler) to
# that crate's .sqlx folder, so a build needs no database. With --check,
# writes it to a scratch folder and fails when any crate's .sqlx differs (a
# query or the schema changed without the data being refreshed). Crate names
# after the option (`scripts/sqlx-prepare.sh worker scheduler`) limit the run
# to those crates; a crate that starts using the macros is added to `crates`.
#
# The macros check each query against one fresh database migrated from
# migrations/ and save what they learned where SQLX_OFFLINE_DIR points; a
# rustc wrapper points it at each crate's own scratch folder, so one build
# of all the crates sorts their data. Expects PostgreSQL up (scripts/services.sh).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/syncfleet-target}"
crates=(common api worker scheduler)
check=false
[[ "${1:-}" == "--check" ]] && check=true && shift
if (($#)); then
  for crate in "$@"; do
    [[ " ${crates[*]} " == *" $crate "* ]] || { echo "sqlx-prepare: no queries in $crate (known: ${crates[*]})" >&2; exit 2; }
  done
  crates=("$@")
fi

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

# Cargo runs the workspace's rustc invocations through this wrapper: each
# crate's macros write to $out/<its folder>.
cat >"$out/rustc-wrapper" <<'EOF'
#!/usr/bin/env bash
dir="$SQLX_PREPARE_OUT/$(basename "$CARGO_MANIFEST_DIR")"
mkdir -p "$dir"
SQLX_OFFLINE_DIR="$dir" exec "$@"
EOF
chmod +x "$out/rustc-wrapper"

# The macros run again only when their crate is rebuilt: every crate depends
# on common.
packages=()
for crate in "${crates[@]}"; do packages+=(-p "syncfleet-$crate"); done
touch "$repo/common/src/lib.rs"
DATABASE_URL="postgres://postgres@127.0.0.1:5432/$database" SQLX_PREPARE_OUT="$out/data" \
  RUSTC_WORKSPACE_WRAPPER="$out/rustc-wrapper" cargo build --quiet --locked "${packages[@]}" --lib
# The next offline build must not reuse what this online one compiled.
touch "$repo/common/src/lib.rs"

stale=false
for crate in "${crates[@]}"; do
  fresh="$out/data/$crate"
  if [[ ! -d "$fresh" ]]; then
    echo "sqlx-prepare: $crate wrote no offline data (was it rebuilt?)" >&2
    exit 1
  fi
  if $check; then
    if ! diff -r "$fresh" "$repo/$crate/.sqlx" >/dev/null 2>&1; then
      echo "sqlx-prepare: $crate/.sqlx is out of date: run scripts/sqlx-prepare.sh and commit it" >&2
      diff -r "$fresh" "$repo/$crate/.sqlx" >&2 || true
      stale=true
    fi
  else
    rm -rf "$repo/$crate/.sqlx"
    cp -r "$fresh" "$repo/$crate/.sqlx"
    echo "sqlx-prepare: wrote $(ls "$repo/$crate/.sqlx" | wc -l) queries to $crate/.sqlx"
  fi
done
if $stale; then
  exit 1
fi
if $check; then
  echo "sqlx-prepare: the offline data of ${crates[*]} is up to date"
fi
