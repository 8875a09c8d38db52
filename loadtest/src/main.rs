//! `syncfleet-loadtest`: demo data and benchmarks of the fleet on this machine.
//!
//! - `seed-demo`: a few organizations and users for the local demo.
//! - `pipeline [--jobs N] [--workers W]`: the scheduler's publish rate, then
//!   the end-to-end rate of N jobs of the trivial sync work through the whole
//!   path (publish, consume, session commit, ack); prints a JSON report.
//! - `sync [--users N] [--workers W] [--latency MS] [--concurrency C]`: real
//!   sync sessions of N connected users through W workers (C cadence jobs in
//!   flight each) against in-process Graph and Salesforce simulators that add
//!   MS milliseconds to every call; prints a JSON report.
//! - `api [--users N] [--requests R] [--concurrency C] [--force-syncs F]
//!   [--workers W]`: p50/p99 latency of the api's list endpoints over N
//!   users, and of force sync from request to session start under a cadence
//!   backlog; prints a JSON report.
//! - `push [--users N] [--workers W] [--streams S] [--probes P] [--batch B]`:
//!   a customization push to N users through the api and W workers, the
//!   notification latency over S live streams during it, then P
//!   `pg_notify` probes (commit to event); prints a JSON report.
//! - `fleet [--users N] [--p1-users P] [--workers W] [--concurrency C] [--latency-ms L]
//!   [--jitter-ms J] [--compression K] [--step-start S] [--step-cycles Y]
//!   [--force-syncs F] [--organizations O] [--ceiling-messages M]
//!   [--ceiling-rows R] [--out DIR]`: the whole fleet as processes against
//!   the simulators, P1-P5 measured against this machine's ceilings; writes
//!   `DIR/report.json` and `DIR/report.html` (see `fleet`).
//! - `faults [--seed S] [--duration SECONDS] [--users N] [--workers W]
//!   [--interval SECONDS] [--short] [--out DIR]`: the whole fleet as
//!   processes on a private PostgreSQL, RabbitMQ and Redis while faults are
//!   injected on a schedule drawn from S; then checks that nothing was lost
//!   or done twice; writes `DIR/report.json` and `DIR/summary.txt` and fails
//!   on any failed check (see `faults`).
//! - `limiter [--calls N]`: the fleet-wide limiter's cost per call, through
//!   Redis and through the local share; prints a JSON report.

mod api_bench;
mod demo;
mod faults;
mod fleet;
mod limiter_bench;
mod pipeline;
mod push_bench;
mod scratch;
mod sync_bench;

use syncfleet_common::telemetry;

const USAGE: &str = "usage: syncfleet-loadtest seed-demo | pipeline [--jobs N] [--workers W] \
                     | sync [--users N] [--workers W] [--latency MS] [--concurrency C] | limiter [--calls N] \
                     | api [--users N] [--requests R] [--concurrency C] [--force-syncs F] [--workers W] \
                     | push [--users N] [--workers W] [--streams S] [--probes P] [--batch B] \
                     | fleet [--users N] [--p1-users P] [--workers W] [--concurrency C] [--latency-ms L] [--jitter-ms J] \
                     [--compression K] [--step-start S] [--step-cycles Y] [--force-syncs F] [--organizations O] \
                     [--ceiling-messages M] [--ceiling-rows R] [--out DIR] \
                     | faults [--seed S] [--duration SECONDS] [--users N] [--workers W] [--interval SECONDS] [--short] [--out DIR]";

fn main() -> anyhow::Result<()> {
    telemetry::main_with("syncfleet-loadtest", |source| async move {
        let arguments: Vec<String> = std::env::args().skip(1).collect();
        match arguments.first().map(String::as_str) {
            Some("seed-demo") => demo::seed(&source).await,
            Some("pipeline") => pipeline::run(&source, &pipeline::Options::parse(&arguments[1..])?).await,
            Some("limiter") => limiter_bench::run(&source, &limiter_bench::Options::parse(&arguments[1..])?).await,
            Some("api") => api_bench::run(&source, &api_bench::Options::parse(&arguments[1..])?).await,
            Some("push") => push_bench::run(&source, &push_bench::Options::parse(&arguments[1..])?).await,
            Some("faults") => faults::run(&source, &faults::Options::parse(&arguments[1..])?).await,
            Some("fleet") => fleet::run(&source, &fleet::Options::parse(&arguments[1..])?).await,
            Some("sync") => sync_bench::run(&source, &sync_bench::Options::parse(&arguments[1..])?).await,
            _ => anyhow::bail!("{USAGE}"),
        }
    })
}
