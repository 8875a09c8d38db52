#!/usr/bin/env bash
# Brings the whole fleet up on this machine and shows it syncing for real:
# services, migrations, the provider simulators (Graph, EWS, Gmail,
# Salesforce), demo data connected to them, the api, two schedulers (one
# leads, one stands by) and two workers, on a 30-second cadence. Prints what
# the fleet does every few seconds, Salesforce's Tasks included; Ctrl-C (or
# --duration SECONDS) stops everything gracefully.
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

# The simulators stand in for every provider. The fleet reaches them over
# plain http on the loopback, which only SYNCFLEET_ALLOW_LOCAL_URLS permits;
# the key and the OAuth clients are the demo's own, used nowhere else.
simulators_listen=127.0.0.1:9400
sim="http://$simulators_listen"
export SYNCFLEET_SIMULATOR_LISTEN=$simulators_listen
export SYNCFLEET_SIMULATOR_SMTP_LISTEN=127.0.0.1:2525
# The leader relays the email outbox (auto-suspend notices) to the SMTP simulator.
export SYNCFLEET_SMTP_URL=smtp://127.0.0.1:2525
export SYNCFLEET_DEMO_SIMULATOR_URL=$sim
export SYNCFLEET_ENCRYPTION_KEYS="1:c3luY2ZsZWV0LWRlbW8ta2V5LW5vdC1hLXNlY3JldCE="
export SYNCFLEET_ALLOW_LOCAL_URLS=true
# The fleet's limits match the simulated org's allocation (seed-demo creates it with 10 million a day).
export SYNCFLEET_LIMIT_SALESFORCE_DAILY_REQUESTS=10000000
export SYNCFLEET_GRAPH_URL=$sim
export SYNCFLEET_MICROSOFT_TOKEN_URL="$sim/organizations/oauth2/v2.0/token"
export SYNCFLEET_MICROSOFT_CLIENT_ID=syncfleet-demo-app
export SYNCFLEET_MICROSOFT_CLIENT_SECRET=syncfleet-demo-app-secret
export SYNCFLEET_GMAIL_URL=$sim
export SYNCFLEET_GOOGLE_TOKEN_URL="$sim/token"
export SYNCFLEET_GOOGLE_CLIENT_ID=syncfleet-demo-project
export SYNCFLEET_GOOGLE_CLIENT_SECRET=syncfleet-demo-project-secret
export SYNCFLEET_SALESFORCE_CLIENT_ID=syncfleet-demo-connected-app

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

"$bin/syncfleet-api" migrate

# The simulators keep everything in memory: each run starts them empty and
# seeds them again, for demo users made afresh with new credentials.
start simulators "$bin/syncfleet-simulators"
simulators_pid=${pids[-1]}
for _ in $(seq 100); do curl -s -o /dev/null "$sim/" && break; sleep 0.1; done
if ! kill -0 "$simulators_pid" 2>/dev/null || ! curl -s -o /dev/null "$sim/"; then
  echo "The simulators did not come up on $simulators_listen (is the port taken?). $logs/simulators.log:" >&2
  tail -n 5 "$logs/simulators.log" >&2
  exit 1
fi
seeded=$("$bin/syncfleet-loadtest" seed-demo)
echo "$seeded"
crm_org=$(sed -n 's/^Salesforce org: \([^ ]*\).*/\1/p' <<<"$seeded")
demo_orgs="'acme', 'globex', 'initech', 'umbrella'"

start api "$bin/syncfleet-api"
start scheduler-1 env SYNCFLEET_OPS_LISTEN=127.0.0.1:9191 "$bin/syncfleet-scheduler"
start scheduler-2 env SYNCFLEET_OPS_LISTEN=127.0.0.1:9192 "$bin/syncfleet-scheduler"
start worker-1 env SYNCFLEET_WORKER_ID=demo-worker-1 SYNCFLEET_OPS_LISTEN=127.0.0.1:9291 "$bin/syncfleet-worker"
start worker-2 env SYNCFLEET_WORKER_ID=demo-worker-2 SYNCFLEET_OPS_LISTEN=127.0.0.1:9292 "$bin/syncfleet-worker"
for _ in $(seq 100); do curl -sf http://127.0.0.1:8080/readyz >/dev/null 2>&1 && break; sleep 0.1; done
echo "Fleet up: api on http://127.0.0.1:8080 (readyz: $(curl -s http://127.0.0.1:8080/readyz)), 2 schedulers, 2 workers; cadence $SYNCFLEET_SYNC_INTERVAL."
echo "Simulators on $sim (control APIs under $sim/_control/...), SMTP on $SYNCFLEET_SIMULATOR_SMTP_LISTEN."
query() { psql -h 127.0.0.1 -U postgres -d "$database" -P pager=off "$@"; }
token=$("$bin/syncfleet-api" token create --role admin --label demo-admin)
someone=$(query -Atqc \
  "SELECT u.id FROM users u JOIN organizations o ON o.id = u.organization_id
   WHERE o.external_id = 'acme' AND u.sync_status = 'enabled' ORDER BY u.email LIMIT 1")
echo "Force sync through the api (admin token minted for the demo):"
forced=$(curl -s -X POST -H "Authorization: Bearer $token" "http://127.0.0.1:8080/v1/users/$someone/actions/force-sync?wait=10")
echo "$forced"
session=$(jq -r '.job.result.session_id // empty' <<<"$forced" 2>/dev/null || true)
if [[ -n $session ]]; then
  query -Atc "SELECT 'That session (' || status || ', scope ' || scope || '): ' || items_to_crm
                     || ' email(s) logged to Salesforce as Tasks, ' || items_to_mailbox
                     || ' Salesforce item(s) written into the mailbox; calls ' || calls::text
              FROM sync_sessions WHERE id = '$session'"
fi
echo "A mailbox check, run by a worker as an admin job:"
curl -s -X POST -H "Authorization: Bearer $token" "http://127.0.0.1:8080/v1/users/$someone/actions/check-mailbox?wait=10" |
  jq -c '{action, status: .job.status, result: .job.result, error: .job.error}' 2>/dev/null || true
echo "The same force sync again, within the minute:"
curl -s -i -X POST -H "Authorization: Bearer $token" "http://127.0.0.1:8080/v1/users/$someone/actions/force-sync" |
  grep -iE '^(HTTP|retry-after)|error'
echo
echo "Metrics: api http://127.0.0.1:8080/metrics, schedulers :9191 :9192, workers :9291 :9292 (/metrics, /readyz)."
echo "Logs: $logs/. Ctrl-C stops the fleet."

control() { curl -s --max-time 5 "$sim/_control/salesforce/orgs/$crm_org/$1"; }
started=$(date +%s)
while :; do
  sleep 5
  clear 2>/dev/null || true
  echo "Syncfleet demo — $(date -u '+%H:%M:%S') UTC, up $(( $(date +%s) - started ))s, cadence $SYNCFLEET_SYNC_INTERVAL"
  query -Atc "SELECT 'Scheduler leader: term ' || term || ', lease ' || CASE WHEN expires_at > now() THEN 'held' ELSE 'free' END FROM leader_leases"
  echo
  echo "Sessions per organization, status and scope:"
  query -c "SELECT o.name AS organization, s.status, s.scope, count(*) AS sessions,
                   sum(s.items_to_crm) AS items_to_crm, sum(s.items_to_mailbox) AS items_to_mailbox,
                   max(s.started_at)::time(0) AS last_started,
                   round(avg(extract(epoch FROM s.started_at - s.scheduled_at))::numeric * 1000) AS avg_lag_ms
            FROM sync_sessions s JOIN organizations o ON o.id = s.organization_id
            GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
  # What Salesforce holds, read from the simulator, against what the fleet
  # recorded writing there.
  tasks=$(control records/Task || true)
  echo "Salesforce org $crm_org (simulator): $(jq length <<<"${tasks:-[]}" 2>/dev/null || echo '?') Tasks," \
    "$(control records/Event | jq length 2>/dev/null || echo '?') Events," \
    "API usage $(control counters | jq -r '"\(.api_usage.used)/\(.api_usage.max)"' 2>/dev/null || echo '?')."
  echo "Tasks in Salesforce per organization (simulator's records, by the fleet's mappings):"
  query -v ids="$(jq -r '[.[].Id] | join(",")' <<<"${tasks:-[]}" 2>/dev/null || true)" <<SQL
SELECT o.name AS organization,
       count(DISTINCT m.crm_id) FILTER (WHERE m.crm_object = 'Task'
           AND m.crm_id = ANY (string_to_array(:'ids', ','))) AS tasks_in_salesforce,
       count(DISTINCT m.user_id) FILTER (WHERE m.crm_object = 'Task') AS users_logging,
       count(*) FILTER (WHERE m.direction = 'crm_to_mailbox') AS crm_items_in_mailboxes
FROM organizations o JOIN users u ON u.organization_id = o.id
LEFT JOIN item_mappings m ON m.user_id = u.id
WHERE o.external_id IN ($demo_orgs)
GROUP BY 1 ORDER BY 1;
SQL
  echo "Users by effective state:"
  query -c "SELECT o.name AS organization, o.access_type, o.sync_enabled AS org_enabled, u.sync_status,
                   count(*) AS users,
                   count(*) FILTER (WHERE u.queued_job_id IS NOT NULL) AS queued,
                   count(*) FILTER (WHERE u.running_session_id IS NOT NULL) AS running
            FROM users u JOIN organizations o ON o.id = u.organization_id
            WHERE o.external_id IN ($demo_orgs)
            GROUP BY 1, 2, 3, 4 ORDER BY 1, 4"
  echo "Latest sync issues:"
  query -c "SELECT i.created_at::time(0) AS at, u.email, i.source, i.category, left(i.message, 90) AS message
            FROM sync_issues i JOIN users u ON u.id = i.user_id ORDER BY i.created_at DESC LIMIT 5"
  if ((duration > 0 && $(date +%s) - started >= duration)); then
    break
  fi
done
