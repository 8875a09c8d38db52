#!/usr/bin/env bash
# The fleet load test at small sizes, as a smoke check: the whole fleet as
# processes (simulators, api, scheduler, workers) on this machine's services,
# every phase (P1-P5) run once, then P2 on the real 30-minute cadence with
# 2,000 users seeded in their steady state for a minute. It fails on errors
# (a process exiting, a failed session, a missing Task), never on speed: the
# figures of a debug build on a busy CI machine say nothing. The reports are
# left in $CARGO_TARGET_DIR/loadtest-smoke/ (report.json, report.html, logs/)
# and its p2-real/.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/syncfleet-target}"

scripts/services.sh
cargo build --workspace --bins --locked
out="$CARGO_TARGET_DIR/loadtest-smoke"
rm -rf "$out"
"$CARGO_TARGET_DIR/debug/syncfleet-loadtest" fleet \
  --users 600 --organizations 3 --workers 2 --concurrency 100 \
  --latency-ms 1 --jitter-ms 9 \
  --compression 600 --step-start 150 --step-cycles 2 \
  --force-syncs 5 --ceiling-messages 2000 --ceiling-rows 2000 \
  --out "$out"
"$CARGO_TARGET_DIR/debug/syncfleet-loadtest" fleet \
  --p2-real-users 2000 --p2-real-minutes 1 --organizations 3 --workers 2 --concurrency 100 \
  --latency-ms 1 --jitter-ms 9 \
  --out "$out/p2-real"
echo "loadtest smoke: passed; reports in $out/report.json, $out/p2-real/report.json and their report.html"
