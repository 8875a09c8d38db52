#!/usr/bin/env bash
# Brings the whole fleet up on this machine and shows it working: services,
# migrations, demo data, the api, two schedulers (one leads, one stands by)
# and two workers, on a 30-second cadence. Prints what the fleet does every
# few seconds; Ctrl-C (or --duration SECONDS) stops everything gracefully.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/syncfleet-target}"

duration=0
while (($#)); do
  case $1 in
    --duration) duration=${2:?--duration needs a number of seconds}; shift 2 ;;
    *) echo "usage: scripts/demo.sh [--duration SECONDS]" >&2; exit 2 ;;
  esac
done

scripts/services.sh
cargo build --workspace --bins --locked
bin="$CARGO_TARGET_DIR/debug"

database=syncfleet_demo
psql -h 127.0.0.1 -U postgres -d postgres -Atqc "SELECT 1 FROM pg_database WHERE datname = '$database'" | grep -q 1 ||
  psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE $database"
export SYNCFLEET_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$database"
export SYNCFLEET_QUEUE_PREFIX=syncfleet-demo
export SYNCFLEET_SYNC_INTERVAL="${SYNCFLEET_SYNC_INTERVAL:-30s}"
export SYNCFLEET_LEADER_LEASE=3s
export SYNCFLEET_API_LISTEN=127.0.0.1:8080
export SYNCFLEET_LOG_FORMAT=json

"$bin/syncfleet-api" migrate
"$bin/syncfleet-loadtest" seed-demo

logs=.demo/logs
mkdir -p "$logs"
pids=()
start() { # name, command...
  local name=$1; shift
  "$@" >"$logs/$name.log" 2>&1 &
  pids+=($!)
}
stop_all() {
  echo
  echo "Stopping the fleet (SIGTERM, graceful drain)..."
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  echo "Stopped. Logs are in $logs/."
}
trap stop_all EXIT
trap 'exit 130' INT TERM

start api "$bin/syncfleet-api"
start scheduler-1 env SYNCFLEET_OPS_LISTEN=127.0.0.1:9191 "$bin/syncfleet-scheduler"
start scheduler-2 env SYNCFLEET_OPS_LISTEN=127.0.0.1:9192 "$bin/syncfleet-scheduler"
start worker-1 env SYNCFLEET_WORKER_ID=demo-worker-1 SYNCFLEET_OPS_LISTEN=127.0.0.1:9291 "$bin/syncfleet-worker"
start worker-2 env SYNCFLEET_WORKER_ID=demo-worker-2 SYNCFLEET_OPS_LISTEN=127.0.0.1:9292 "$bin/syncfleet-worker"
for _ in $(seq 100); do curl -sf http://127.0.0.1:8080/readyz >/dev/null 2>&1 && break; sleep 0.1; done
echo "Fleet up: api on http://127.0.0.1:8080 (readyz: $(curl -s http://127.0.0.1:8080/readyz)), 2 schedulers, 2 workers; cadence $SYNCFLEET_SYNC_INTERVAL."
token=$("$bin/syncfleet-api" token create --role admin --label demo-admin)
someone=$(psql -h 127.0.0.1 -U postgres -d "$database" -Atqc \
  "SELECT u.id FROM users u JOIN organizations o ON o.id = u.organization_id
   WHERE o.external_id = 'acme' AND u.sync_status = 'enabled' ORDER BY u.email LIMIT 1")
echo "Force sync through the api (admin token minted for the demo):"
curl -s -X POST -H "Authorization: Bearer $token" "http://127.0.0.1:8080/v1/users/$someone/actions/force-sync?wait=10"
echo
echo "The same request again, within the minute:"
curl -s -i -X POST -H "Authorization: Bearer $token" "http://127.0.0.1:8080/v1/users/$someone/actions/force-sync" |
  grep -iE '^(HTTP|retry-after)|error'
echo
echo "Metrics: api http://127.0.0.1:8080/metrics, schedulers :9191 :9192, workers :9291 :9292 (/metrics, /readyz)."
echo "Logs: $logs/. Ctrl-C stops the fleet."

query() { psql -h 127.0.0.1 -U postgres -d "$database" -P pager=off "$@"; }
started=$(date +%s)
while :; do
  sleep 5
  clear 2>/dev/null || true
  echo "Syncfleet demo — $(date -u '+%H:%M:%S') UTC, up $(( $(date +%s) - started ))s, cadence $SYNCFLEET_SYNC_INTERVAL"
  query -Atc "SELECT 'Scheduler leader: term ' || term || ', lease ' || CASE WHEN expires_at > now() THEN 'held' ELSE 'free' END FROM leader_leases"
  echo
  echo "Sessions per organization and status:"
  query -c "SELECT o.name AS organization, s.status, count(*) AS sessions, max(s.started_at)::time(0) AS last_started,
                   round(avg(extract(epoch FROM s.started_at - s.scheduled_at))::numeric * 1000) AS avg_lag_ms
            FROM sync_sessions s JOIN organizations o ON o.id = s.organization_id
            GROUP BY 1, 2 ORDER BY 1, 2"
  echo "Users by effective state:"
  query -c "SELECT o.name AS organization, o.sync_enabled AS org_enabled, u.sync_status, count(*) AS users,
                   count(*) FILTER (WHERE u.queued_job_id IS NOT NULL) AS queued,
                   count(*) FILTER (WHERE u.running_session_id IS NOT NULL) AS running
            FROM users u JOIN organizations o ON o.id = u.organization_id
            WHERE o.external_id IN ('acme', 'globex', 'initech')
            GROUP BY 1, 2, 3 ORDER BY 1, 3"
  echo "Latest sync issues:"
  query -c "SELECT i.created_at::time(0) AS at, u.email, i.source, i.category, i.message
            FROM sync_issues i JOIN users u ON u.id = i.user_id ORDER BY i.created_at DESC LIMIT 5"
  if ((duration > 0 && $(date +%s) - started >= duration)); then
    break
  fi
done
