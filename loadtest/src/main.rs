//! `syncfleet-loadtest`: demo data and benchmarks of the fleet on this
//! machine. [`Command`] lists the commands (`--help` prints them); each
//! command's flags are the `Options` of its module.

mod api_bench;
mod demo;
mod faults;
mod fleet;
mod limiter_bench;
mod pipeline;
mod push_bench;
mod scratch;
mod sync_bench;

use std::ffi::OsString;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, error::ErrorKind};
use syncfleet_common::telemetry;

/// Demo data and benchmarks of the Syncfleet fleet on this machine.
///
/// Settings come from the environment (`SYNCFLEET_*`); the command line picks
/// the command and its sizes.
#[derive(Parser)]
#[command(name = "syncfleet-loadtest", version)]
struct Cli {
    /// What to run.
    #[command(subcommand)]
    command: Command,
}

/// The load test's commands.
#[derive(Subcommand)]
enum Command {
    /// Replaces the demo organizations and users, with mailboxes and a
    /// Salesforce org in the simulators.
    SeedDemo,
    /// Benchmark: the scheduler's publish rate and the end-to-end job rate.
    ///
    /// The scheduler's publish rate, then the end-to-end rate of N jobs of
    /// the trivial sync work through the whole path (publish, consume,
    /// session commit, ack); prints a JSON report.
    Pipeline(pipeline::Options),
    /// Benchmark: real sync sessions against in-process simulators.
    ///
    /// Real sync sessions of N connected users through W workers (C cadence
    /// jobs in flight each) against in-process Graph and Salesforce
    /// simulators that add MS milliseconds to every call, with correctness
    /// checks; prints a JSON report.
    Sync(sync_bench::Options),
    /// Benchmark: the api's list latency, and force sync under a backlog.
    ///
    /// p50/p99 latency of the api's list endpoints over N users, and of force
    /// sync from request to session start under a cadence backlog; prints a
    /// JSON report.
    Api(api_bench::Options),
    /// Benchmark: a customization push and its notifications.
    ///
    /// A customization push to N users through the api and W workers, the
    /// notification latency over S live streams during it, then P
    /// `pg_notify` probes (commit to event); prints a JSON report.
    Push(push_bench::Options),
    /// The fleet load test: the whole fleet as processes, P1-P5.
    ///
    /// The whole fleet as processes against the simulators, P1-P5 measured
    /// against this machine's ceilings (P2 on a cadence compressed by K);
    /// with --p2-real-users N, P2 alone on the real 30-minute cadence with N
    /// users seeded in their steady state. Writes DIR/report.json and
    /// DIR/report.html.
    Fleet(fleet::Options),
    /// The fault test: faults injected into the fleet, then checked.
    ///
    /// The whole fleet as processes on a private PostgreSQL, RabbitMQ and
    /// Redis while faults are injected on a schedule drawn from S; then
    /// checks that nothing was lost or done twice. Writes DIR/report.json
    /// and DIR/summary.txt, and fails on any failed check.
    Faults(faults::Options),
    /// Benchmark: the fleet-wide limiter's cost per call.
    ///
    /// The fleet-wide limiter's cost per call, through Redis and through the
    /// local share; prints a JSON report.
    Limiter(limiter_bench::Options),
}

impl Command {
    /// What clap cannot check alone: flags that bound one another.
    fn check(&self) -> Result<(), &'static str> {
        match self {
            Command::Push(options) => options.check(),
            Command::Fleet(options) => options.check(),
            _ => Ok(()),
        }
    }
}

/// Reads the command line: clap checks each flag, [`Command::check`] the
/// flags that bound one another. A refusal is clap's error (status 2) with
/// the usage of the command given.
fn parse(arguments: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> Result<Command, clap::Error> {
    let mut cli = Cli::command();
    let matches = cli.try_get_matches_from_mut(arguments)?;
    let command = Cli::from_arg_matches(&matches)
        .map_err(|error| error.format(&mut cli))?
        .command;
    if let Err(message) = command.check() {
        cli.build();
        let name = matches.subcommand_name().unwrap_or_default();
        let mut subcommand = cli.find_subcommand(name).cloned().unwrap_or(cli);
        return Err(subcommand.error(ErrorKind::ArgumentConflict, message));
    }
    Ok(command)
}

fn main() -> anyhow::Result<()> {
    let command = parse(std::env::args_os()).unwrap_or_else(|error| error.exit());
    telemetry::main_with("syncfleet-loadtest", |source| async move {
        match command {
            Command::SeedDemo => demo::seed(&source).await,
            Command::Pipeline(options) => pipeline::run(&source, &options).await,
            Command::Sync(options) => sync_bench::run(&source, &options).await,
            Command::Api(options) => api_bench::run(&source, &options).await,
            Command::Push(options) => push_bench::run(&source, &options).await,
            Command::Fleet(options) => fleet::run(&source, &options).await,
            Command::Faults(options) => faults::run(&source, &options).await,
            Command::Limiter(options) => limiter_bench::run(&source, &options).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(line: &str) -> clap::Error {
        match parse(line.split_whitespace()) {
            Ok(_) => panic!("{line:?} was accepted"),
            Err(error) => error,
        }
    }

    #[test]
    fn help_lists_every_command() {
        let help = refusal("syncfleet-loadtest --help");
        assert_eq!(help.kind(), ErrorKind::DisplayHelp);
        assert_eq!(help.exit_code(), 0);
        let text = help.to_string();
        for command in [
            "seed-demo",
            "pipeline",
            "sync",
            "api",
            "push",
            "fleet",
            "faults",
            "limiter",
        ] {
            assert!(text.contains(command), "{command} is missing from:\n{text}");
        }
        let fleet = refusal("syncfleet-loadtest fleet --help").to_string();
        assert!(
            fleet.contains("--ceiling-messages <M>") && fleet.contains("[default: loadtest-report]"),
            "{fleet}"
        );
    }

    #[test]
    fn every_flag_keeps_its_default() {
        let expected: &[(&str, &[(&str, &str)])] = &[
            ("pipeline", &[("jobs", "100000"), ("workers", "2")]),
            (
                "sync",
                &[
                    ("users", "2000"),
                    ("workers", "2"),
                    ("latency", "0"),
                    ("concurrency", "256"),
                ],
            ),
            (
                "api",
                &[
                    ("users", "100000"),
                    ("requests", "200"),
                    ("concurrency", "8"),
                    ("force-syncs", "40"),
                    ("workers", "2"),
                ],
            ),
            (
                "push",
                &[
                    ("users", "100000"),
                    ("workers", "2"),
                    ("streams", "50"),
                    ("probes", "200"),
                    ("batch", "1000"),
                ],
            ),
            (
                "fleet",
                &[
                    ("users", "100000"),
                    ("p1-users", "20000"),
                    ("organizations", "20"),
                    ("workers", "2"),
                    ("concurrency", "1000"),
                    ("latency-ms", "50"),
                    ("jitter-ms", "250"),
                    ("compression", "60"),
                    ("step-start", "2000"),
                    ("step-cycles", "3"),
                    ("force-syncs", "40"),
                    ("ceiling-messages", "50000"),
                    ("ceiling-rows", "50000"),
                    ("out", "loadtest-report"),
                    ("p2-real-minutes", "10"),
                    ("p2-real-new-mail-percent", "5"),
                ],
            ),
            (
                "faults",
                &[
                    ("seed", "1"),
                    ("duration", "480"),
                    ("users", "300"),
                    ("workers", "3"),
                    ("interval", "60"),
                    ("out", "faults-report"),
                ],
            ),
            ("limiter", &[("calls", "20000")]),
        ];
        let cli = Cli::command();
        for (name, flags) in expected {
            let command = cli.find_subcommand(name).unwrap();
            let defaults: Vec<(&str, String)> = command
                .get_arguments()
                .filter_map(|argument| {
                    let default = argument.get_default_values().first()?;
                    Some((argument.get_long()?, default.to_string_lossy().into_owned()))
                })
                .collect();
            let expected: Vec<(&str, String)> = flags.iter().map(|(flag, value)| (*flag, value.to_string())).collect();
            assert_eq!(defaults, expected, "{name}");
        }
    }

    #[test]
    fn the_scripts_command_lines_are_accepted() {
        for line in [
            // scripts/loadtest-smoke.sh
            "syncfleet-loadtest fleet --users 600 --organizations 3 --workers 2 --concurrency 100 \
             --latency-ms 1 --jitter-ms 9 --compression 600 --step-start 150 --step-cycles 2 \
             --force-syncs 5 --ceiling-messages 2000 --ceiling-rows 2000 --out /tmp/loadtest-smoke",
            "syncfleet-loadtest fleet --p2-real-users 2000 --p2-real-minutes 1 --organizations 3 --workers 2 \
             --concurrency 100 --latency-ms 1 --jitter-ms 9 --out /tmp/loadtest-smoke/p2-real",
            // README.md's Capacity section
            "syncfleet-loadtest fleet --p2-real-users 1000000 --p2-real-minutes 10 --out /var/tmp/fleet-real",
            // scripts/faults-smoke.sh
            "syncfleet-loadtest faults --short --seed 1 --duration 90 --users 120 --workers 3 --interval 20 \
             --out /tmp/faults-smoke",
            // scripts/demo.sh and README.md
            "syncfleet-loadtest seed-demo",
            "syncfleet-loadtest pipeline --jobs 50000 --workers 2",
            "syncfleet-loadtest fleet --users 40000 --p1-users 10000 --step-start 4000 --out /var/tmp/fleet-lean",
            "syncfleet-loadtest faults --seed 7 --duration 480 --users 300 --workers 3 --out faults-report",
            "syncfleet-loadtest sync --users 10 --workers 1 --latency 0 --concurrency 4",
            "syncfleet-loadtest api --users 10 --requests 5 --concurrency 2 --force-syncs 3 --workers 1",
            "syncfleet-loadtest push --users 10 --workers 1 --streams 10 --probes 5 --batch 100",
            "syncfleet-loadtest limiter --calls 1000",
        ] {
            if let Err(error) = parse(line.split_whitespace()) {
                panic!("{line}: {error}");
            }
        }
    }

    #[test]
    fn a_bad_value_is_refused_naming_its_flag() {
        for (line, named) in [
            (
                "syncfleet-loadtest pipeline --jobs 0",
                "'--jobs <N>': must be at least 1",
            ),
            (
                "syncfleet-loadtest pipeline --jobs many",
                "'--jobs <N>': takes a whole number",
            ),
            ("syncfleet-loadtest sync --concurrency 70000", "'--concurrency <C>'"),
            (
                "syncfleet-loadtest faults --users 9",
                "'--users <N>': must be at least 10",
            ),
            (
                "syncfleet-loadtest fleet --step-cycles 1",
                "'--step-cycles <Y>': must be at least 2",
            ),
            ("syncfleet-loadtest fleet --concurrency 65536", "'--concurrency <C>'"),
            (
                "syncfleet-loadtest limiter --calls 10",
                "'--calls <N>': must be at least 64",
            ),
        ] {
            let error = refusal(line);
            assert_eq!(error.kind(), ErrorKind::ValueValidation, "{line}");
            assert_eq!(error.exit_code(), 2);
            assert!(error.to_string().contains(named), "{line}: {error}");
        }
    }

    #[test]
    fn flags_that_bound_one_another_are_refused_with_the_command_usage() {
        for (line, reason) in [
            (
                "syncfleet-loadtest push --users 10 --streams 11",
                "--streams is at most --users",
            ),
            (
                "syncfleet-loadtest fleet --users 40",
                "--force-syncs must be fewer than --users",
            ),
        ] {
            let error = refusal(line).to_string();
            assert!(error.contains(reason), "{line}: {error}");
            let command = line.split_whitespace().nth(1).unwrap();
            assert!(
                error.contains(&format!("Usage: syncfleet-loadtest {command}")),
                "{line}: {error}"
            );
        }
    }

    #[test]
    fn the_real_cadence_takes_only_its_own_flags_and_the_fleet_s() {
        for (line, kind) in [
            (
                "syncfleet-loadtest fleet --p2-real-users 1000 --compression 60",
                ErrorKind::ArgumentConflict,
            ),
            (
                "syncfleet-loadtest fleet --p2-real-users 1000 --users 2000",
                ErrorKind::ArgumentConflict,
            ),
            (
                "syncfleet-loadtest fleet --p2-real-minutes 5",
                ErrorKind::MissingRequiredArgument,
            ),
            (
                "syncfleet-loadtest fleet --p2-real-users 1000 --p2-real-new-mail-percent 120",
                ErrorKind::ValueValidation,
            ),
        ] {
            assert_eq!(refusal(line).kind(), kind, "{line}");
        }
        let help = refusal("syncfleet-loadtest fleet --help").to_string();
        assert!(
            help.contains("--p2-real-users <N>") && help.contains("lag p99 < 5 s"),
            "{help}"
        );
    }

    #[test]
    fn an_unknown_flag_or_command_is_refused() {
        for (line, named) in [
            ("syncfleet-loadtest fleet --speed 3", "'--speed'"),
            ("syncfleet-loadtest pipeline --jobs", "'--jobs <N>'"),
            ("syncfleet-loadtest benchmark", "'benchmark'"),
        ] {
            let error = refusal(line);
            assert_eq!(error.exit_code(), 2, "{line}");
            assert!(error.to_string().contains(named), "{line}: {error}");
        }
        assert_eq!(
            refusal("syncfleet-loadtest").kind(),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
    }
}
