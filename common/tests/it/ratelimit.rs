//! The fleet-wide limiter against the real Redis: limits never exceeded by
//! several limiters (workers) at once, the rate kept near its maximum, leaked
//! leases reclaimed, cooldowns shared, and a Redis outage survived.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use secrecy::SecretString;
use syncfleet_common::ratelimit::{Admission, Limit, Limiter, Permit};
use uuid::Uuid;

fn limiter(url: &str, prefix: &str) -> Limiter {
    Limiter::new(
        SecretString::from(url.to_owned()),
        prefix,
        Duration::from_millis(500),
        2,
    )
}

fn redis_url() -> String {
    std::env::var("SYNCFLEET_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned())
}

/// Waits as told until the call is admitted.
async fn admitted(limiter: &Limiter, account: &str, limit: Limit) -> Permit {
    loop {
        match limiter.acquire(account, limit, 1).await {
            Admission::Granted(permit) => return permit,
            Admission::Wait(delay) => tokio::time::sleep(delay).await,
        }
    }
}

/// Calls admitted by `tasks` tasks spread over `workers`, each calling as
/// fast as it is let through for `run`; answers when each call went, sorted.
async fn hammer(
    workers: &[Limiter],
    account: &'static str,
    limit: Limit,
    tasks: usize,
    run: Duration,
) -> Vec<Duration> {
    let stamps = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let deadline = started + run;
    let mut handles = Vec::new();
    for index in 0..tasks {
        let limiter = workers[index % workers.len()].clone();
        let stamps = stamps.clone();
        handles.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let permit = admitted(&limiter, account, limit).await;
                stamps.lock().unwrap().push(started.elapsed());
                limiter.release(permit).await;
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    let mut stamps = stamps.lock().unwrap().clone();
    stamps.sort();
    stamps
}

/// The most calls any one-second window of `stamps` (sorted) holds.
fn busiest_second(stamps: &[Duration]) -> usize {
    stamps
        .iter()
        .enumerate()
        .map(|(first, start)| {
            stamps[first..]
                .iter()
                .take_while(|stamp| **stamp < *start + Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrency_is_never_exceeded_across_workers() {
    let prefix = Uuid::new_v4().simple().to_string();
    let workers = [limiter(&redis_url(), &prefix), limiter(&redis_url(), &prefix)];
    let limit = Limit {
        rate: None,
        concurrency: Some(4),
    };
    let in_flight = Arc::new(AtomicU32::new(0));
    let peak = Arc::new(AtomicU32::new(0));
    let calls = Arc::new(AtomicU32::new(0));
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut tasks = Vec::new();
    for index in 0..16 {
        let limiter = workers[index % 2].clone();
        let (in_flight, peak, calls) = (in_flight.clone(), peak.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let permit = admitted(&limiter, "mailbox-a", limit).await;
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                calls.fetch_add(1, Ordering::SeqCst);
                limiter.release(permit).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let (peak, calls) = (peak.load(Ordering::SeqCst), calls.load(Ordering::SeqCst));
    println!("concurrency 4: peak {peak}, {calls} calls of 10 ms in 1.5 s (at most ~600)");
    assert_eq!(peak, 4, "the limit is reached and never exceeded");
    assert!(calls >= 300, "{calls} calls: the slots were kept busy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rate_stays_within_the_limit_in_every_window_and_near_it_overall() {
    let prefix = Uuid::new_v4().simple().to_string();
    let workers = [limiter(&redis_url(), &prefix), limiter(&redis_url(), &prefix)];
    let limit = Limit {
        rate: Some((200, Duration::from_secs(1))),
        concurrency: None,
    };
    let stamps = hammer(&workers, "org-a", limit, 10, Duration::from_secs(3)).await;
    let busiest = busiest_second(&stamps);
    let in_three_seconds = stamps.iter().filter(|stamp| **stamp < Duration::from_secs(3)).count();
    println!(
        "rate 200/s: busiest 1 s window {busiest}, {in_three_seconds} calls in 3 s ({:.1}% of 600)",
        in_three_seconds as f64 / 6.0
    );
    assert!(busiest <= 200, "a window held {busiest} calls");
    assert!(
        in_three_seconds >= 540,
        "only {in_three_seconds} calls in 3 s: under 90% of the allowed rate"
    );
}

#[tokio::test]
async fn a_lease_leaked_by_a_dead_worker_is_reclaimed_after_its_expiry() {
    let prefix = Uuid::new_v4().simple().to_string();
    let limit = Limit {
        rate: None,
        concurrency: Some(1),
    };
    let dead = limiter(&redis_url(), &prefix);
    let leaked = admitted(&dead, "account", limit).await;
    std::mem::forget(leaked);
    let alive = limiter(&redis_url(), &prefix);
    assert!(matches!(alive.acquire("account", limit, 1).await, Admission::Wait(_)));
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert!(matches!(
        alive.acquire("account", limit, 1).await,
        Admission::Granted(_)
    ));
}

#[tokio::test]
async fn a_cooldown_seen_by_one_worker_stops_the_others() {
    let prefix = Uuid::new_v4().simple().to_string();
    let limit = Limit {
        rate: Some((1000, Duration::from_secs(1))),
        concurrency: None,
    };
    let (first, second) = (limiter(&redis_url(), &prefix), limiter(&redis_url(), &prefix));
    first
        .cool_down("mailbox", Duration::from_millis(800), "Graph asked to wait 800 ms")
        .await;
    // A shorter cooldown seen later does not shorten it, nor its reason.
    first
        .cool_down("mailbox", Duration::from_millis(100), "Graph asked to wait 100 ms")
        .await;
    // The console sees it, with the reason of the one that holds.
    let running = second.cooldowns().await.unwrap();
    assert_eq!(running.len(), 1, "{running:?}");
    assert_eq!(running[0].account, "mailbox");
    assert_eq!(running[0].reason.as_deref(), Some("Graph asked to wait 800 ms"));
    match second.acquire("mailbox", limit, 1).await {
        Admission::Wait(delay) => assert!(delay > Duration::from_millis(600), "{delay:?}"),
        Admission::Granted(_) => panic!("the other worker was let through during the cooldown"),
    }
    assert!(matches!(
        second.acquire("other-mailbox", limit, 1).await,
        Admission::Granted(_)
    ));
    tokio::time::sleep(Duration::from_millis(850)).await;
    assert!(matches!(
        second.acquire("mailbox", limit, 1).await,
        Admission::Granted(_)
    ));
    assert_eq!(
        second.cooldowns().await.unwrap(),
        Vec::new(),
        "an ended cooldown is not listed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_a_local_share_holds_and_redis_is_used_again_once_back() {
    // A Redis of this test's own, on a free port, started only later.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let prefix = Uuid::new_v4().simple().to_string();
    let worker = limiter(&url, &prefix);
    let limit = Limit {
        rate: Some((100, Duration::from_secs(1))),
        concurrency: None,
    };
    let started = Instant::now();
    let mut granted = 0;
    while started.elapsed() < Duration::from_secs(1) {
        match worker.acquire("org", limit, 1).await {
            Admission::Granted(permit) => {
                granted += 1;
                worker.release(permit).await;
            }
            Admission::Wait(delay) => tokio::time::sleep(delay).await,
        }
    }
    println!("without Redis: {granted} calls in 1 s under a limit of 100/s shared by 2 workers");
    assert!(granted <= 52, "the local share (half of 100/s) was exceeded: {granted}");
    assert!(granted >= 30, "the local share was not used: {granted}");

    let mut redis = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let recovered = async {
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Admission::Granted(permit) = worker.acquire("org", limit, 1).await {
                worker.release(permit).await;
                let client = redis::Client::open(url.as_str()).unwrap();
                let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
                    continue;
                };
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{prefix}:*"))
                    .query_async(&mut connection)
                    .await
                    .unwrap();
                if !keys.is_empty() {
                    return true;
                }
            }
        }
        false
    }
    .await;
    redis.kill().unwrap();
    redis.wait().unwrap();
    assert!(recovered, "the limiter went back to Redis on its own");
}

#[tokio::test]
async fn raising_a_limit_takes_effect_at_once() {
    let prefix = Uuid::new_v4().simple().to_string();
    let worker = limiter(&redis_url(), &prefix);
    let slow = Limit {
        rate: Some((10, Duration::from_secs(3600))),
        concurrency: None,
    };
    // Spend the slow limit's burst: the next call would wait for minutes.
    while let Admission::Granted(permit) = worker.acquire("org", slow, 1).await {
        worker.release(permit).await;
    }
    assert!(matches!(worker.acquire("org", slow, 1).await, Admission::Wait(delay) if delay > Duration::from_secs(60)));
    let fast = Limit {
        rate: Some((1000, Duration::from_secs(1))),
        concurrency: None,
    };
    // At most the new limit's own spacing, then the calls go.
    let mut granted = 0;
    for _ in 0..20 {
        match worker.acquire("org", fast, 1).await {
            Admission::Granted(_) => granted += 1,
            Admission::Wait(delay) => {
                assert!(
                    delay <= Duration::from_millis(5),
                    "the old backlog still holds the account: {delay:?}"
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
    assert!(granted >= 10, "only {granted} of 20 calls went under the raised limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_keeps_the_limit_and_is_used_again_after_its_restart() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let start_redis = || {
        std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut redis = start_redis();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let prefix = Uuid::new_v4().simple().to_string();
    let worker = limiter(&url, &prefix);
    let limit = Limit {
        rate: Some((100, Duration::from_secs(1))),
        concurrency: None,
    };
    // Calls granted in one second, waiting as told.
    let second_of_calls = || async {
        let started = Instant::now();
        let mut granted = 0;
        while started.elapsed() < Duration::from_secs(1) {
            match worker.acquire("org", limit, 1).await {
                Admission::Granted(permit) => {
                    granted += 1;
                    worker.release(permit).await;
                }
                Admission::Wait(delay) => tokio::time::sleep(delay.min(Duration::from_millis(50))).await,
            }
        }
        granted
    };
    let with_redis = second_of_calls().await;
    redis.kill().unwrap();
    redis.wait().unwrap();
    let without = second_of_calls().await;
    redis = start_redis();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = second_of_calls().await;
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut connection)
        .await
        .unwrap();
    redis.kill().unwrap();
    redis.wait().unwrap();
    println!(
        "100/s limit: {with_redis} calls with Redis, {without} in the second after it was killed (local share: 50/s)"
    );
    assert!(with_redis <= 101, "{with_redis}");
    assert!(
        without <= 52,
        "the local share was exceeded while Redis was down: {without}"
    );
    assert!(
        without >= 30,
        "the local share was not used while Redis was down: {without}"
    );
    assert!(!keys.is_empty(), "the limiter is back on the restarted Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_rate_limit_is_served_mostly_without_redis_and_still_never_exceeded() {
    let prefix = Uuid::new_v4().simple().to_string();
    let workers = [limiter(&redis_url(), &prefix), limiter(&redis_url(), &prefix)];
    let limit = Limit {
        rate: Some((5000, Duration::from_secs(1))),
        concurrency: None,
    };
    let stamps = hammer(&workers, "project", limit, 16, Duration::from_secs(2)).await;
    let busiest = busiest_second(&stamps);
    let in_two_seconds = stamps.iter().filter(|stamp| **stamp < Duration::from_secs(2)).count();
    println!(
        "rate 5000/s, saturated: busiest 1 s window {busiest}, {in_two_seconds} calls in 2 s ({:.1}% of 10000)",
        in_two_seconds as f64 / 100.0
    );
    assert!(busiest <= 5000, "a window held {busiest} calls");
    assert!(in_two_seconds >= 8500, "only {in_two_seconds} calls in 2 s");

    // Under the limit, most calls are served from credits, without Redis.
    let worker = limiter(&redis_url(), &Uuid::new_v4().simple().to_string());
    let calls = Arc::new(AtomicU32::new(0));
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (worker, calls) = (worker.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let permit = admitted(&worker, "project", limit).await;
                worker.release(permit).await;
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let (calls, round_trips) = (calls.load(Ordering::SeqCst), worker.round_trips());
    println!("rate 5000/s, unsaturated: {calls} calls, {round_trips} Redis round trips");
    assert!(
        u64::from(calls) >= 4 * round_trips,
        "{round_trips} round trips for {calls} calls: the credits were not used"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_admissions_keep_every_limit_exact_in_fewer_round_trips_than_calls() {
    let prefix = Uuid::new_v4().simple().to_string();
    let lingering = |prefix: &str| {
        Limiter::lingering(
            SecretString::from(redis_url()),
            prefix,
            Duration::from_millis(500),
            2,
            Duration::from_millis(5),
        )
    };
    let workers = [lingering(&prefix), lingering(&prefix)];
    // Two accounts in the same batches: one bounded in flight and in rate,
    // one in rate only.
    let both = Limit {
        rate: Some((2000, Duration::from_secs(1))),
        concurrency: Some(8),
    };
    let rate_only = Limit {
        rate: Some((400, Duration::from_secs(1))),
        concurrency: None,
    };
    let in_flight = Arc::new(AtomicU32::new(0));
    let peak = Arc::new(AtomicU32::new(0));
    let stamps = Arc::new(Mutex::new((Vec::new(), Vec::new())));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(2);
    let mut tasks = Vec::new();
    for index in 0..96 {
        let limiter = workers[index % 2].clone();
        let (in_flight, peak, stamps) = (in_flight.clone(), peak.clone(), stamps.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                if index % 3 == 0 {
                    let permit = admitted(&limiter, "org-b", rate_only).await;
                    stamps.lock().unwrap().1.push(started.elapsed());
                    limiter.release(permit).await;
                    continue;
                }
                let permit = admitted(&limiter, "mailbox-b", both).await;
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                stamps.lock().unwrap().0.push(started.elapsed());
                tokio::time::sleep(Duration::from_millis(2)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                limiter.release(permit).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let (mut bounded, mut rated) = stamps.lock().unwrap().clone();
    bounded.sort();
    rated.sort();
    let calls = (bounded.len() + rated.len()) as u64;
    let round_trips: u64 = workers.iter().map(Limiter::round_trips).sum();
    let peak = peak.load(Ordering::SeqCst);
    println!(
        "batched: {calls} calls ({} bounded, {} rate-only), peak {peak} in flight, {round_trips} round trips",
        bounded.len(),
        rated.len()
    );
    assert_eq!(peak, 8, "the concurrency limit is reached and never exceeded");
    assert!(
        busiest_second(&bounded) <= 2000,
        "a window held {}",
        busiest_second(&bounded)
    );
    assert!(
        busiest_second(&rated) <= 400,
        "a window held {}",
        busiest_second(&rated)
    );
    assert!(rated.len() >= 600, "only {} rate-only calls in 2 s", rated.len());
    // Call by call, each bounded call takes an admission and a release, and
    // each rate-only call an admission: batched, half of that at most.
    let unbatched = 2 * bounded.len() as u64 + rated.len() as u64;
    assert!(
        round_trips * 2 < unbatched,
        "{round_trips} round trips for {calls} calls ({unbatched} call by call)"
    );
}
