//! The worker's heartbeat: every `SYNCFLEET_HEARTBEAT_INTERVAL` one
//! statement upserts the worker's row of `worker_heartbeats` (version, host,
//! deliveries in flight per queue, draining) and adds what the worker counted
//! since the last beat to the console's minutes (`fleet_minutes`: sessions by
//! status, the cadence lag's histogram, throttled answers by provider) and the
//! Salesforce orgs' usage as their answers reported it. Nothing is written
//! per session: the counts wait in memory for the next beat, and a beat that
//! fails keeps them for the one after.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sqlx::PgPool;
use syncfleet_common::queue::Route;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// The cadence lag's buckets (seconds, upper bounds): the console's p50 and
/// p99 are the bound of the bucket that holds them.
pub const LAG_BUCKETS: [f64; 12] = [0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0];

/// How long the last beat (the worker's stop) may hold its exit.
const LAST_BEAT_LIMIT: Duration = Duration::from_secs(2);

/// What a worker counted since its last beat; shared by the consumer (sessions,
/// lag) and the sync's gate (throttled answers, Salesforce usage).
#[derive(Clone, Default, Debug)]
pub struct Tally(Arc<Mutex<Counts>>);

#[derive(Default, Debug)]
struct Counts {
    /// (minute, series, label) to the count.
    minutes: BTreeMap<(DateTime<Utc>, &'static str, String), f64>,
    /// The org's last reported usage: (used, allocation, reserve percent, when).
    usage: HashMap<String, (u64, u64, u8, DateTime<Utc>)>,
}

fn this_minute() -> DateTime<Utc> {
    let now = Utc::now();
    now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now)
}

impl Tally {
    fn add(&self, series: &'static str, label: String) {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *counts.minutes.entry((this_minute(), series, label)).or_default() += 1.0;
    }

    /// A session ended with this status.
    pub fn session(&self, status: &str) {
        self.add("sessions", status.to_owned());
    }

    /// A cadence session started this long after its slot.
    pub fn lag(&self, seconds: f64) {
        let bound = LAG_BUCKETS
            .iter()
            .find(|bound| seconds <= **bound)
            .map_or_else(|| "+Inf".to_owned(), |bound| bound.to_string());
        self.add("lag", bound);
    }

    /// A provider answered throttled with a delay.
    pub fn throttled(&self, provider: &str) {
        self.add("throttled", provider.to_owned());
    }

    /// A Salesforce org reported its daily usage.
    pub fn salesforce_usage(&self, org: &str, used: u64, allocation: u64, reserve_percent: u8) {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        counts
            .usage
            .insert(org.to_owned(), (used, allocation, reserve_percent, Utc::now()));
    }

    fn take(&self) -> Counts {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts back what a failed beat could not write (newer usage wins).
    fn restore(&self, taken: Counts) {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for (key, value) in taken.minutes {
            *counts.minutes.entry(key).or_default() += value;
        }
        for (org, usage) in taken.usage {
            counts.usage.entry(org).or_insert(usage);
        }
    }
}

/// Deliveries in flight per queue.
#[derive(Default, Debug)]
pub struct InFlight([AtomicI64; 3]);

impl InFlight {
    fn slot(route: Route) -> usize {
        match route {
            Route::Priority => 0,
            Route::Cadence => 1,
            Route::Push => 2,
        }
    }

    pub fn start(&self, route: Route) {
        self.0[Self::slot(route)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn end(&self, route: Route) {
        self.0[Self::slot(route)].fetch_sub(1, Ordering::Relaxed);
    }

    fn json(&self) -> serde_json::Value {
        let [priority, cadence, push] = &self.0;
        serde_json::json!({
            "priority": priority.load(Ordering::Relaxed),
            "cadence": cadence.load(Ordering::Relaxed),
            "push": push.load(Ordering::Relaxed),
        })
    }
}

/// Who the worker is, as its row says.
pub struct Heartbeat {
    pub pool: PgPool,
    pub worker_id: String,
    pub started_at: DateTime<Utc>,
    pub interval: Duration,
    pub in_flight: Arc<InFlight>,
    pub draining: Arc<AtomicBool>,
    pub tally: Tally,
}

impl Heartbeat {
    /// Beats every interval until `stop`, at once when `draining` starts
    /// (the worker stops taking jobs), then once more marking the worker
    /// stopped.
    pub async fn run(self, draining: CancellationToken, stop: CancellationToken) {
        let mut marked = false;
        loop {
            // A beat waiting for a connection (the pool held by sessions
            // stuck on a lock) never holds the worker's exit.
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                beat = self.beat(false) => {
                    if let Err(error) = beat {
                        warn!(%error, "Could not write the heartbeat; will try again.");
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = draining.cancelled(), if !marked => {
                    marked = true;
                    self.draining.store(true, Ordering::Relaxed);
                }
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
        match tokio::time::timeout(LAST_BEAT_LIMIT, self.beat(true)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => warn!(%error, "Could not record the worker's stop; it will show as silent."),
            Err(_) => warn!("Recording the worker's stop took too long; it will show as silent."),
        }
    }

    /// One beat: the row, the minutes and the usage, in one statement.
    pub async fn beat(&self, stopped: bool) -> Result<(), sqlx::Error> {
        let taken = self.tally.take();
        let mut minutes = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((minute, series, label), value) in &taken.minutes {
            minutes.0.push(*minute);
            minutes.1.push(*series);
            minutes.2.push(label.as_str());
            minutes.3.push(*value);
        }
        let mut usage = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (org, (used, allocation, reserve, at)) in &taken.usage {
            usage.0.push(org.as_str());
            usage.1.push(i64::try_from(*used).unwrap_or(i64::MAX));
            usage.2.push(i64::try_from(*allocation).unwrap_or(i64::MAX).max(1));
            usage.3.push(i16::from(*reserve).min(99));
            usage.4.push(*at);
        }
        let interval_ms = i32::try_from(self.interval.as_millis()).unwrap_or(i32::MAX);
        let version = env!("CARGO_PKG_VERSION");
        let host = host_name();
        let draining = stopped || self.draining.load(Ordering::Relaxed);
        let in_flight = self.in_flight.json();
        let result = sqlx::query!(
            "WITH beat AS ( \
               INSERT INTO worker_heartbeats \
                 (worker_id, version, host, started_at, last_seen_at, interval_ms, draining, stopped_at, in_flight) \
               VALUES ($1, $2, $3, $4, now(), $5, $6, CASE WHEN $7 THEN now() END, $8) \
               ON CONFLICT (worker_id) DO UPDATE SET version = EXCLUDED.version, host = EXCLUDED.host, \
                 started_at = EXCLUDED.started_at, last_seen_at = now(), interval_ms = EXCLUDED.interval_ms, \
                 draining = EXCLUDED.draining, stopped_at = EXCLUDED.stopped_at, in_flight = EXCLUDED.in_flight), \
             minutes AS ( \
               INSERT INTO fleet_minutes (minute, series, label, source, value) \
               SELECT m.minute, m.series, m.label, $1, m.value \
               FROM UNNEST($9::timestamptz[], $10::text[], $11::text[], $12::float8[]) AS m(minute, series, label, value) \
               ON CONFLICT (minute, series, label, source) DO UPDATE SET value = fleet_minutes.value + EXCLUDED.value) \
             INSERT INTO salesforce_org_usage (org, used, allocation, reserve_percent, observed_at) \
             SELECT * FROM UNNEST($13::text[], $14::int8[], $15::int8[], $16::int2[], $17::timestamptz[]) \
             ON CONFLICT (org) DO UPDATE SET used = EXCLUDED.used, allocation = EXCLUDED.allocation, \
               reserve_percent = EXCLUDED.reserve_percent, observed_at = EXCLUDED.observed_at \
             WHERE salesforce_org_usage.observed_at < EXCLUDED.observed_at",
            &self.worker_id,
            version,
            host,
            self.started_at,
            interval_ms,
            draining,
            stopped,
            in_flight,
            &minutes.0,
            &minutes.1 as &[&str],
            &minutes.2 as &[&str],
            &minutes.3,
            &usage.0 as &[&str],
            &usage.1,
            &usage.2,
            &usage.3,
            &usage.4
        )
        .execute(&self.pool)
        .await;
        if result.is_err() {
            self.tally.restore(taken);
        }
        result.map(|_| ())
    }
}

/// The machine's (the pod's) name.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|name| name.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_beat_keeps_its_counts_for_the_next() {
        let tally = Tally::default();
        tally.session("succeeded");
        tally.lag(0.3);
        tally.lag(4000.0);
        let taken = tally.take();
        tally.session("succeeded");
        tally.restore(taken);
        // Summed over minutes: the test may cross one.
        let mut sums = BTreeMap::new();
        for ((_, series, label), value) in tally.take().minutes {
            *sums.entry((series, label)).or_insert(0.0) += value;
        }
        let labels: Vec<(&str, &str, f64)> = sums
            .iter()
            .map(|((series, label), value)| (*series, label.as_str(), *value))
            .collect();
        assert!(labels.contains(&("sessions", "succeeded", 2.0)), "{labels:?}");
        assert!(labels.contains(&("lag", "0.5", 1.0)), "{labels:?}");
        assert!(labels.contains(&("lag", "+Inf", 1.0)), "{labels:?}");
    }
}
