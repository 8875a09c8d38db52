#!/usr/bin/env bash
# The whole test suite, against the real PostgreSQL, RabbitMQ and Redis of
# this machine (started, or installed, by scripts/services.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/syncfleet-target}"

scripts/services.sh
# Chromium and ChromeDriver for the admin panel's browser tests.
scripts/browser.sh

# Databases left behind by tests that failed in an earlier run.
psql -h 127.0.0.1 -U postgres -d postgres -Atqc "SELECT datname FROM pg_database WHERE datname LIKE 'sf\_test\_%'" |
  while read -r database; do
    psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$database\" WITH (FORCE)" </dev/null >/dev/null
  done

# Queues and exchanges of tests that failed in an earlier run (prefix t + 12 hex digits).
# (grep finds nothing on a clean broker: that is not a failure.)
rabbitmqctl -q list_queues name 2>/dev/null | { grep -E '^t[0-9a-f]{12}\.' || true; } |
  while read -r queue; do rabbitmqctl -q delete_queue "$queue" </dev/null >/dev/null 2>&1 || true; done
rabbitmqctl -q list_exchanges name 2>/dev/null | { grep -E '^t[0-9a-f]{12}\.' || true; } |
  while read -r exchange; do rabbitmqctl -q eval "rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, <<\"$exchange\">>), false, <<\"cleanup\">>)." </dev/null >/dev/null 2>&1 || true; done

# Tests start the services' binaries as processes, as a deployment would.
cargo build --workspace --bins --locked

status=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast "$@" || status=$?
else
  cargo test --workspace --locked --no-fail-fast "$@" || status=$?
fi

# The api against its own OpenAPI document (schemathesis), after the suite
# whatever its result, so one run reports both.
scripts/api-contract.sh || status=$?
exit $status
