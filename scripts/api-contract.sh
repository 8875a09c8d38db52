#!/usr/bin/env bash
# Runs schemathesis against the api's own OpenAPI document: the api binary
# serves a fresh database (migrated, with an organization and a few users so
# generated requests also reach real rows), and every operation is called
# with generated valid and invalid input. It fails on any server error, on a
# status code, content type, header or body the document does not describe,
# and on invalid input that is accepted.
#
# schemathesis is pinned in api/contract/requirements.txt and installed under
# SYNCFLEET_TOOLS_DIR (default /var/tmp/syncfleet-tools), reused until the pin
# changes. Expects the services up (scripts/services.sh) and the binaries built.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/syncfleet-target}"
tools="${SYNCFLEET_TOOLS_DIR:-/var/tmp/syncfleet-tools}"
venv="$tools/contract-venv"
requirements="$repo/api/contract/requirements.txt"

mkdir -p "$tools"
exec 8>"$tools/.contract-lock"
flock 8
pins="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/schemathesis" ]] || [[ "$(cat "$venv/.pins" 2>/dev/null)" != "$pins" ]]; then
  echo "api-contract: installing schemathesis into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input --requirement "$requirements"
  echo "$pins" >"$venv/.pins"
fi

# The database name matches the test suite's cleanup pattern, so a run that
# dies leaves nothing the next one does not drop.
database="sf_test_contract_$$"
prefix="t$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
token="sf_contract_$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
work="$(mktemp -d)"
api_pid=""
cleanup() {
  if [[ -n "$api_pid" ]]; then kill "$api_pid" 2>/dev/null || true; wait "$api_pid" 2>/dev/null || true; fi
  psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$database\" WITH (FORCE)" >/dev/null 2>&1 || true
  rabbitmqctl -q list_queues name 2>/dev/null | { grep "^$prefix\." || true; } |
    while read -r queue; do rabbitmqctl -q delete_queue "$queue" </dev/null >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE \"$database\"" >/dev/null
export SYNCFLEET_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$database"
export SYNCFLEET_QUEUE_PREFIX="$prefix"
export SYNCFLEET_API_LISTEN="127.0.0.1:$port"
export SYNCFLEET_API_DRAIN_DELAY=1s
export SYNCFLEET_ENCRYPTION_KEYS="1:c3luY2ZsZWV0LWNvbnRyYWN0LWtleS1ub3Qtc2VjcnQ="
export SYNCFLEET_BOOTSTRAP_ADMIN_TOKEN="$token"
export SYNCFLEET_LOG=warn
api="$CARGO_TARGET_DIR/debug/syncfleet-api"
"$api" migrate >/dev/null

# A few rows for the generated requests to find.
psql -h 127.0.0.1 -U postgres -d "$database" -q <<'SQL' >/dev/null
INSERT INTO plans (id, code, name) VALUES ('00000000-0000-0000-0000-0000000000a1', 'standard', 'Standard');
INSERT INTO organizations (id, external_id, name, access_type)
VALUES ('00000000-0000-0000-0000-0000000000b1', 'contract-org', 'Contract organization', 'office365');
INSERT INTO users (id, organization_id, name, email)
SELECT ('00000000-0000-0000-0000-0000000001' || lpad(n::text, 2, '0'))::uuid,
       '00000000-0000-0000-0000-0000000000b1', 'User ' || n, 'user' || n || '@contract.test'
FROM generate_series(1, 5) AS n;
SQL

"$api" serve >"$work/api.log" 2>&1 &
api_pid=$!
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then break; fi
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || { cat "$work/api.log" >&2; exit 1; }

status=0
# One worker: with several threads, Python 3.11 (this machine's) can fail
# inside `ast.parse`, which hypothesis calls to describe strategies
# ("AST constructor recursion depth mismatch", fixed in later CPython
# releases): a tool error, not a finding.
# From the scratch folder: schemathesis keeps its state in the working directory.
cd "$work"
"$venv/bin/schemathesis" run "http://127.0.0.1:$port/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection \
  --max-examples "${SYNCFLEET_CONTRACT_EXAMPLES:-25}" \
  --seed "${SYNCFLEET_CONTRACT_SEED:-42}" \
  --request-timeout 30 \
  --workers 1 \
  --report-dir "$work/report" \
  --warnings off || status=$?
if [[ $status -ne 0 ]]; then
  echo "api-contract: schemathesis found problems (above); the api's log:" >&2
  tail -n 50 "$work/api.log" >&2
fi
exit $status
