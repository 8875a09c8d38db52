//! P2 without compression (`fleet --p2-real-users N`): N users in the
//! database and the simulators, on the real 30-minute cadence.
//!
//! 1. The users are seeded in bulk in their steady state
//!    ([`seed::Standing::Steady`]): credentials with the access tokens kept,
//!    mail cursors, mappings, next slots spread over the interval by user id
//!    as the scheduler spreads them; then vacuumed and analyzed, as a
//!    database that has lived would be.
//! 2. The workers start; the slots that passed while seeding move on by
//!    whole intervals (so every user stays on its own slot) to a few seconds
//!    from now; the scheduler starts on the 30-minute cadence.
//! 3. For `--p2-real-minutes` from then, new mail arrives in
//!    `--p2-real-new-mail-percent` of the mailboxes per interval (each
//!    message from a Contact of the user's org, so its session logs a Task),
//!    spread evenly over time and over the mailboxes.
//! 4. The window's sessions: scheduling lag p50/p99 (session start minus
//!    slot), sessions/s against the slots due, the cost of a session (see
//!    [`super::cost`]), the simulators' memory, and the verdict against the
//!    target: 1,000,000 users with the lag's p99 under 5 s.
//!
//! The report goes to `<out>/report.json` (figures and timeline),
//! `<out>/report.html` (the chart) and stdout (figures).

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use sqlx::PgPool;
use syncfleet_common::{
    cadence,
    config::CommonConfig,
    queue::{Publisher, Topology},
    secrets::KeyRing,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    CADENCE, ENCRYPTION_KEYS, Fleet, LAG_LIMIT_MS, Options, chart, cost, processes, quantiles, sampler, seed, since,
    sleep_checking, window,
};
use crate::{
    demo::ControlApi,
    scratch::{Scratch, count, rounded},
};

/// The target this mode measures against: this many users on the cadence
/// with the scheduling lag's p99 under [`LAG_LIMIT_MS`].
const TARGET_USERS: usize = 1_000_000;
/// From the slots' move to the window's start: the scheduler's start.
const LEAD: Duration = Duration::from_secs(20);
/// After the window, before reading it: its last slots' sessions start (a
/// session that has not started by then waited longer than the limit).
const SETTLE: Duration = Duration::from_secs(6);
/// The stride the new mail takes through the users: a prime larger than any
/// run's users, so the first N messages reach N different mailboxes.
const MAIL_STRIDE: usize = 1_000_003;

/// The real-cadence P2's flags.
#[derive(clap::Args, Debug, Clone)]
pub struct RealOptions {
    /// Runs P2 on the real 30-minute cadence instead of P1-P5: N users seeded
    /// in bulk in their steady state (sealed credentials with access tokens
    /// kept, mail cursors, mappings, next slots spread over the interval),
    /// then the fleet (scheduler, --workers workers, simulators) on the
    /// cadence for --p2-real-minutes. Reports the scheduling lag p50/p99,
    /// sessions/s and the cost of a session, with a verdict against the
    /// target "1,000,000 users, lag p99 < 5 s".
    #[arg(
        long,
        value_name = "N",
        value_parser = count,
        conflicts_with_all = [
            "users", "p1_users", "compression", "step_start", "step_cycles", "force_syncs",
            "ceiling_messages", "ceiling_rows",
        ]
    )]
    pub p2_real_users: Option<usize>,
    /// Minutes the real-cadence P2 is measured for, from the scheduler's start.
    #[arg(long, value_name = "MIN", default_value_t = 10, value_parser = count, requires = "p2_real_users")]
    p2_real_minutes: usize,
    /// Percent of the mailboxes that receive a new message (from a Contact:
    /// its session logs a Task) per 30-minute interval in the real-cadence P2.
    #[arg(
        long,
        value_name = "PCT",
        default_value_t = 5.0,
        value_parser = percent,
        requires = "p2_real_users"
    )]
    p2_real_new_mail_percent: f64,
}

/// The value parser of a percentage, 0 to 100.
fn percent(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(number) if (0.0..=100.0).contains(&number) => Ok(number),
        Ok(_) => Err("must be from 0 to 100".to_owned()),
        Err(_) => Err("takes a number".to_owned()),
    }
}

/// The slots `users` have in `[from, to)` on a cadence of `interval`: each
/// user's own slots, as [`cadence::next_slot`] spreads them.
fn slots_in(users: &[Uuid], interval: Duration, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    let step = chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::MAX);
    let just_before = from - chrono::Duration::milliseconds(1);
    users
        .iter()
        .map(|user| {
            let mut slot = cadence::next_slot(*user, interval, just_before);
            // `next_slot` answers after `just_before`: a slot in the last
            // millisecond before `from` is not in the window.
            while slot < from {
                slot += step;
            }
            let mut slots = 0;
            while slot < to {
                slots += 1;
                slot += step;
            }
            slots
        })
        .sum()
}

/// The user the `message`th new message goes to, of `users`: a stride through
/// them, so messages spread over every mailbox before any gets a second.
fn mail_recipient(message: usize, users: usize) -> usize {
    let users = users.max(1);
    (message % users) * (MAIL_STRIDE % users) % users
}

/// Adds new mail to the seeded mailboxes at `per_second` until `stop`:
/// each message received now from a Contact of the user's Salesforce org.
/// Answers how many were added.
async fn send_new_mail(control: ControlApi, users: usize, per_second: f64, stop: CancellationToken) -> u64 {
    let started = Instant::now();
    let mut sent = 0u64;
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return sent,
            _ = ticker.tick() => {}
        }
        let due = (started.elapsed().as_secs_f64() * per_second) as u64;
        while sent < due {
            let index = mail_recipient(sent as usize, users);
            let email = seed::user_email(index);
            let from = seed::contact_email(
                index / seed::USERS_PER_SALESFORCE_ORG,
                sent as usize % seed::CONTACTS_PER_ORG,
            );
            let message = seed::received(&email, &from, &format!("New mail {sent}"), Utc::now());
            let path = ["_control", "graph", "mailboxes", email.as_str(), "messages"];
            if let Err(error) = control.post(&path, message).await {
                eprintln!("new mail for {email} was not added: {error:#}");
            }
            sent += 1;
        }
    }
}

/// The simulators' resident memory now and at its peak, in MB.
fn simulators_memory(fleet: &Fleet) -> serde_json::Value {
    let memory = fleet
        .simulators
        .pid()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .and_then(|status| processes::Memory::parse(&status))
        .unwrap_or_default();
    let mb = |bytes: u64| rounded(bytes as f64 / (1024.0 * 1024.0), 1);
    serde_json::json!({ "rss_mb": mb(memory.rss), "peak_rss_mb": mb(memory.peak) })
}

/// Seeds, runs the fleet on the real cadence, writes the report; answers it.
pub(super) async fn measure(
    fleet: &mut Fleet,
    pool: &PgPool,
    common: &CommonConfig,
    scratch: &Scratch,
    options: &Options,
    users: usize,
) -> anyhow::Result<serde_json::Value> {
    let real = &options.real;
    let ring = KeyRing::parse(&SecretString::from(ENCRYPTION_KEYS.to_owned()))?;
    let control = ControlApi::new(&fleet.simulators_url())?;
    let seeding = Instant::now();
    let standing = seed::Standing::Steady {
        interval: CADENCE,
        baseline_days: syncfleet_worker::sync::DEFAULT_BASELINE_DAYS,
    };
    let seeded = seed::seed(pool, &control, &ring, users, options.organizations, standing).await?;
    let seeding_s = seeding.elapsed().as_secs_f64();
    eprintln!("seeded {users} users in {seeding_s:.1}s");
    let vacuuming = Instant::now();
    for table in ["users", "user_runs", "credentials", "sync_state", "item_mappings"] {
        sqlx::query(&format!("VACUUM (ANALYZE) {table}")).execute(pool).await?;
    }
    let vacuum_s = vacuuming.elapsed().as_secs_f64();
    let seeded_memory = simulators_memory(fleet);
    eprintln!("vacuumed in {vacuum_s:.1}s; simulators: {seeded_memory}");

    fleet.start_workers(options.workers).await?;
    // Slots that passed while seeding move on by whole intervals: each user
    // keeps its own offset, none is due before the scheduler runs.
    let (from, moved): (DateTime<Utc>, i64) = sqlx::query_as(
        "WITH start AS (SELECT now() + $1 * interval '1 millisecond' AS at), moved AS ( \
             UPDATE user_runs SET \
                 next_sync_at = next_sync_at + ceil(EXTRACT(EPOCH FROM start.at - next_sync_at) * 1000 / $2) \
                     * $2 * interval '1 millisecond', \
                 last_session_at = next_sync_at \
                     + (ceil(EXTRACT(EPOCH FROM start.at - next_sync_at) * 1000 / $2) - 1) \
                     * $2 * interval '1 millisecond' \
             FROM start WHERE next_sync_at < start.at RETURNING 1 \
         ) \
         SELECT start.at, (SELECT count(*) FROM moved) FROM start",
    )
    .bind(LEAD.as_millis() as f64)
    .bind(CADENCE.as_millis() as f64)
    .fetch_one(pool)
    .await?;
    eprintln!("{moved} slots that passed while seeding moved on by whole intervals");
    fleet.restart_scheduler(CADENCE, 1).await?;
    let to = from + chrono::Duration::minutes(real.p2_real_minutes as i64);

    let topology = Topology::new(scratch.prefix.clone(), common.delivery_limit);
    let publisher = Arc::new(Publisher::connect(common.amqp_url.clone(), "loadtest observer", topology).await?);
    let origin = Instant::now();
    let stop = CancellationToken::new();
    let sampling = tokio::spawn(sampler::run(fleet.watched(), publisher, origin, stop.clone()));
    let mail_per_second = real.p2_real_new_mail_percent / 100.0 * users as f64 / CADENCE.as_secs_f64();
    let mail = tokio::spawn(send_new_mail(
        ControlApi::new(&fleet.simulators_url())?,
        users,
        mail_per_second,
        stop.clone(),
    ));

    sleep_checking(fleet, from - Utc::now()).await?;
    let cpu = fleet.cpu();
    let before = fleet.snapshot(pool, common).await?;
    sleep_checking(fleet, to - Utc::now()).await?;
    let after = fleet.snapshot(pool, common).await?;
    let machine_busy_percent = cpu.busy_percent_until(fleet.cpu());
    let run_memory = simulators_memory(fleet);
    let (ended, calls) = cost::session_calls(pool, from, to).await?;
    let per_session = before.per_session(&after, ended, &calls);
    stop.cancel();
    let mail_sent = mail.await?;
    sleep_checking(fleet, chrono::Duration::from_std(SETTLE).unwrap_or_default()).await?;
    let figures = window(pool, "cadence", from, to).await?;
    let sampled = sampling.await?;
    fleet.check()?;

    let window_s = (to - from).num_milliseconds() as f64 / 1000.0;
    let due = slots_in(&seeded.users, CADENCE, from, to);
    let lag_p99 = figures.lag_ms.get(1).copied().unwrap_or(f64::MAX);
    // A slot whose session has not started by now waited over 5 s too.
    let complete = figures.sessions * 100 >= due * 99;
    let held = complete && lag_p99 < LAG_LIMIT_MS && figures.failed == 0;
    let mut errors = Vec::new();
    if figures.failed > 0 {
        errors.push(format!("P2 real: {} sessions did not succeed", figures.failed));
        errors.extend(super::failure_causes(pool).await?);
    }
    let p2 = serde_json::json!({
        "users": users,
        "cadence_s": CADENCE.as_secs_f64(),
        "window_s": window_s,
        "slots_due": due,
        "sessions": figures.sessions,
        "not_started": (due - figures.sessions).max(0),
        "failed": figures.failed,
        "sessions_per_s": rounded(figures.sessions as f64 / window_s.max(0.001), 1),
        "slots_due_per_s": rounded(due as f64 / window_s.max(0.001), 1),
        "scheduling_lag_ms": quantiles(&figures.lag_ms),
        "session_duration_ms": quantiles(&figures.duration_ms),
        "tasks_logged": figures.items_to_crm,
        "new_mail": {
            "percent_of_mailboxes_per_interval": real.p2_real_new_mail_percent,
            "messages_added": mail_sent,
        },
        "machine_busy_percent": machine_busy_percent,
        "per_session": per_session,
        "simulators_memory": { "after_seeding": seeded_memory, "after_the_run": run_memory },
        "held": held,
    });
    let verdict = serde_json::json!({
        "target": format!("{TARGET_USERS} users on the 30-minute cadence, scheduling lag p99 < {LAG_LIMIT_MS} ms"),
        "met": held && users >= TARGET_USERS && options.latency_ms >= 50,
        "users": users,
        "lag_p99_ms": rounded(lag_p99, 1),
        "every_slot_started": complete,
        "no_failed_session": figures.failed == 0,
        "provider_latency_ms": [options.latency_ms, options.latency_ms + options.jitter_ms],
    });
    let phases = [chart::Phase {
        name: format!("P2 real cadence, N={users}"),
        start: 0.0,
        end: since(origin),
    }];
    let report = serde_json::json!({
        "configuration": options.configuration(&seeded, serde_json::json!({
            "mode": "p2_real_cadence",
            "users": users,
            "minutes": real.p2_real_minutes,
            "new_mail_percent_per_interval": real.p2_real_new_mail_percent,
        })),
        "seeding_s": rounded(seeding_s, 1),
        "vacuum_analyze_s": rounded(vacuum_s, 1),
        "p2_real_cadence": p2,
        "verdict": verdict,
        "environment": super::environment(pool).await,
        "errors": errors,
        "timeline": super::timeline(&sampled.samples),
    });
    let headline: Vec<(String, String)> = [
        ("Users on the 30-minute cadence", users.to_string()),
        ("Scheduling lag p50 ms", p2["scheduling_lag_ms"]["p50"].to_string()),
        ("Scheduling lag p99 ms", p2["scheduling_lag_ms"]["p99"].to_string()),
        (
            "Sessions/s (slots due/s)",
            format!("{} ({})", p2["sessions_per_s"], p2["slots_due_per_s"]),
        ),
        (
            "Fleet CPU ms per session",
            p2["per_session"]["fleet_cpu_ms"].to_string(),
        ),
        ("Target met", verdict["met"].to_string()),
    ]
    .into_iter()
    .map(|(label, value)| (label.to_owned(), value))
    .collect();
    super::write_report(
        &options.out,
        &report,
        &chart::html(
            "Syncfleet fleet load test: P2 on the real cadence",
            &headline,
            &sampled.samples,
            &phases,
            &[],
        ),
    )?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HALF_HOUR: Duration = Duration::from_secs(1800);

    fn users(count: u128) -> Vec<Uuid> {
        let base = 0x0193_5d6a_1c00_7000_8000_0000_0000_0000u128;
        (0..count).map(|index| Uuid::from_u128(base | index)).collect()
    }

    #[test]
    fn every_user_has_one_slot_per_interval_spread_evenly_over_it() {
        let users = users(30_000);
        let from = Utc::now();
        let interval = chrono::Duration::from_std(HALF_HOUR).unwrap();
        assert_eq!(slots_in(&users, HALF_HOUR, from, from + interval), 30_000);
        assert_eq!(slots_in(&users, HALF_HOUR, from, from + interval * 2), 60_000);
        // A tenth of the interval holds a tenth of the slots (within 5%).
        let tenth = slots_in(&users, HALF_HOUR, from, from + interval / 10);
        assert!((2_850..=3_150).contains(&tenth), "{tenth} slots in a tenth");
        assert_eq!(slots_in(&users, HALF_HOUR, from, from), 0);
    }

    #[test]
    fn new_mail_reaches_every_mailbox_once_before_any_twice() {
        for users in [1, 7, 2_000, 1_000_000] {
            let mut reached = vec![false; users];
            for message in 0..users {
                let index = mail_recipient(message, users);
                assert!(!reached[index], "user {index} of {users} twice");
                reached[index] = true;
            }
        }
    }

    #[test]
    fn a_percentage_is_from_0_to_100() {
        assert_eq!(percent("2.5"), Ok(2.5));
        assert_eq!(percent("0"), Ok(0.0));
        assert!(percent("101").is_err());
        assert!(percent("-1").is_err());
        assert!(percent("a few").is_err());
    }
}
