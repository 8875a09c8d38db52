//! One sample a second of the running fleet, from the workers' own
//! `/metrics` (sessions ended, deliveries in flight, the scheduling-lag
//! histogram), the broker (messages waiting) and `/proc` (each worker's
//! resident memory): the timeline of the chart and the P4 figure.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use syncfleet_common::queue::{Publisher, Route};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    chart::Sample,
    processes::{Memory, metric_sum},
};

/// A worker as the sampler sees it.
#[derive(Clone)]
pub struct Watched {
    pub name: String,
    pub ops: SocketAddr,
    pub pid: u32,
}

/// What the sampler learned of one worker.
#[derive(Debug, Clone, Default)]
pub struct WorkerPeak {
    pub name: String,
    /// The most deliveries it had in flight at one sample.
    pub max_in_flight: f64,
    /// Its resident memory at that sample.
    pub rss_at_max_in_flight: u64,
    /// Its largest resident memory at any sample.
    pub max_rss: u64,
    /// Its peak resident memory as the kernel kept it (`VmHWM`).
    pub peak_rss: u64,
}

/// The timeline and the workers' peaks.
pub struct Sampled {
    pub samples: Vec<Sample>,
    pub workers: Vec<WorkerPeak>,
}

/// Samples every second until `stop`; `origin` is the run's t = 0.
pub async fn run(
    workers: Vec<Watched>,
    publisher: Arc<Publisher>,
    origin: Instant,
    stop: CancellationToken,
) -> Sampled {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("a plain HTTP client builds");
    let mut peaks: Vec<WorkerPeak> = workers
        .iter()
        .map(|worker| WorkerPeak {
            name: worker.name.clone(),
            ..WorkerPeak::default()
        })
        .collect();
    let mut samples = Vec::new();
    let mut previous_sessions: Option<f64> = None;
    let mut previous_lag: Vec<(f64, f64)> = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let (mut sessions, mut in_flight, mut worst_rss) = (0.0, 0.0, 0u64);
        let mut lag_buckets: Vec<(f64, f64)> = Vec::new();
        for (worker, peak) in workers.iter().zip(peaks.iter_mut()) {
            let exposition = match http.get(format!("http://{}/metrics", worker.ops)).send().await {
                Ok(response) => response.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            let flying = metric_sum(&exposition, "syncfleet_worker_in_flight");
            sessions += metric_sum(&exposition, "syncfleet_sessions_total");
            in_flight += flying;
            merge_buckets(&mut lag_buckets, &cadence_lag_buckets(&exposition));
            let memory = std::fs::read_to_string(format!("/proc/{}/status", worker.pid))
                .ok()
                .and_then(|status| Memory::parse(&status))
                .unwrap_or_default();
            worst_rss = worst_rss.max(memory.rss);
            peak.max_rss = peak.max_rss.max(memory.rss);
            peak.peak_rss = peak.peak_rss.max(memory.peak);
            if flying > peak.max_in_flight || (flying == peak.max_in_flight && memory.rss > peak.rss_at_max_in_flight) {
                peak.max_in_flight = flying;
                peak.rss_at_max_in_flight = memory.rss;
            }
        }
        let waiting = publisher.ready_count(Route::Cadence).await.unwrap_or(0)
            + publisher.ready_count(Route::Priority).await.unwrap_or(0);
        let delta: Vec<(f64, f64)> = lag_buckets
            .iter()
            .map(|(bound, count)| {
                let before = previous_lag.iter().find(|(b, _)| b == bound).map_or(0.0, |(_, c)| *c);
                (*bound, count - before)
            })
            .collect();
        previous_lag = lag_buckets;
        samples.push(Sample {
            t: origin.elapsed().as_secs_f64(),
            sessions_per_s: previous_sessions.map_or(0.0, |before| (sessions - before).max(0.0)),
            lag_p99_ms: bucket_quantile(&delta, 0.99) * 1000.0,
            in_flight,
            queue_depth: f64::from(waiting),
            worker_rss_mb: worst_rss as f64 / (1024.0 * 1024.0),
        });
        previous_sessions = Some(sessions);
    }
    Sampled {
        samples,
        workers: peaks,
    }
}

/// The cumulative `(upper bound, count)` buckets of the cadence scheduling
/// lag histogram in a Prometheus exposition.
fn cadence_lag_buckets(exposition: &str) -> Vec<(f64, f64)> {
    exposition
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("syncfleet_scheduling_lag_seconds_bucket{")?;
            let (labels, value) = rest.split_once("} ")?;
            if !labels.contains("trigger=\"cadence\"") {
                return None;
            }
            let bound = labels.split("le=\"").nth(1)?.split('"').next()?;
            let bound = if bound == "+Inf" {
                f64::INFINITY
            } else {
                bound.parse().ok()?
            };
            Some((bound, value.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

/// Adds `more` buckets into `into`, bound by bound.
fn merge_buckets(into: &mut Vec<(f64, f64)>, more: &[(f64, f64)]) {
    for (bound, count) in more {
        match into.iter_mut().find(|(b, _)| b == bound) {
            Some((_, total)) => *total += count,
            None => into.push((*bound, *count)),
        }
    }
    into.sort_by(|a, b| a.0.total_cmp(&b.0));
}

/// The upper bound of the bucket holding quantile `q` of cumulative
/// buckets (0 when empty; the largest finite bound for the +Inf bucket).
fn bucket_quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let Some(total) = buckets.last().map(|(_, count)| *count) else {
        return 0.0;
    };
    if total <= 0.0 {
        return 0.0;
    }
    let largest_finite = buckets
        .iter()
        .map(|(bound, _)| *bound)
        .filter(|bound| bound.is_finite())
        .fold(0.0, f64::max);
    buckets
        .iter()
        .find(|(_, count)| *count >= q * total)
        .map_or(
            largest_finite,
            |(bound, _)| {
                if bound.is_finite() { *bound } else { largest_finite }
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cadence_lag_quantile_comes_from_the_buckets() {
        let exposition = "syncfleet_scheduling_lag_seconds_bucket{le=\"0.1\",trigger=\"cadence\"} 90\n\
                          syncfleet_scheduling_lag_seconds_bucket{le=\"0.2\",trigger=\"cadence\"} 98\n\
                          syncfleet_scheduling_lag_seconds_bucket{le=\"0.4\",trigger=\"cadence\"} 100\n\
                          syncfleet_scheduling_lag_seconds_bucket{le=\"+Inf\",trigger=\"cadence\"} 100\n\
                          syncfleet_scheduling_lag_seconds_bucket{le=\"0.1\",trigger=\"force\"} 5000\n";
        let mut merged = Vec::new();
        merge_buckets(&mut merged, &cadence_lag_buckets(exposition));
        merge_buckets(&mut merged, &cadence_lag_buckets(exposition));
        assert_eq!(merged.len(), 4);
        assert_eq!(merged[0], (0.1, 180.0));
        assert_eq!(bucket_quantile(&merged, 0.5), 0.1);
        assert_eq!(bucket_quantile(&merged, 0.99), 0.4);
        assert_eq!(bucket_quantile(&[], 0.99), 0.0);
        // Everything beyond the last finite bound reads as that bound.
        assert_eq!(bucket_quantile(&[(0.1, 0.0), (f64::INFINITY, 10.0)], 0.99), 0.1);
    }
}
