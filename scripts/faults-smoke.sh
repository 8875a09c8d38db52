#!/usr/bin/env bash
# The fault test's short version, as a smoke check (about three minutes):
# the whole fleet as processes (simulators, api, two schedulers, three
# workers) on a private PostgreSQL cluster, RabbitMQ node and Redis of its
# own, while workers are killed -9, PostgreSQL is restarted, Redis is killed
# and RabbitMQ is restarted; then every check of `syncfleet-loadtest faults`
# (nothing lost, nothing done twice, no authorization lost...). The shared
# services of the machine are never stopped. The report is left in
# $CARGO_TARGET_DIR/faults-smoke/ (report.json, summary.txt, logs/).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/syncfleet-target}"

scripts/services.sh
cargo build --workspace --bins --locked
out="$CARGO_TARGET_DIR/faults-smoke"
rm -rf "$out"
"$CARGO_TARGET_DIR/debug/syncfleet-loadtest" faults --short \
  --seed "${SYNCFLEET_FAULTS_SEED:-1}" --duration 90 --users 120 --workers 3 --interval 20 \
  --out "$out"
echo "faults smoke: passed; report in $out/report.json and $out/summary.txt"
