//! Leader election: kill -9 of the leader, the standby takes over.

use std::time::Duration;

use chrono::Utc;
use syncfleet_common::domain::{AccessType, SyncStatus};
use syncfleet_testkit::{TestEnv, organization, stop_gracefully, users, wait_until};

use crate::support::{sessions_by_user, users_synced_at_least, worker};

fn spawn_scheduler(env: &TestEnv) -> std::process::Child {
    env.spawn(
        "syncfleet-scheduler",
        &[
            ("SYNCFLEET_SYNC_INTERVAL", "4s"),
            ("SYNCFLEET_SCHEDULER_TICK", "100ms"),
            ("SYNCFLEET_LEADER_LEASE", "2s"),
        ],
    )
}

async fn term(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT term FROM leader_leases WHERE name = 'scheduler'")
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_standby_takes_over_when_the_leader_is_killed_and_no_user_is_skipped() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let ids = users(&env.pool, org, 40, SyncStatus::Enabled, Utc::now(), true).await;
    let mut leader = spawn_scheduler(&env);
    wait_until(Duration::from_secs(30), "a leader", || async { term(&env).await == 1 }).await;
    let standby = spawn_scheduler(&env);
    let worker = worker(&env, &[]);
    wait_until(Duration::from_secs(60), "two syncs of every user", || async {
        users_synced_at_least(&env, 2).await == ids.len() as i64
    })
    .await;

    leader.kill().unwrap();
    leader.wait().unwrap();
    let killed_at = Utc::now();
    wait_until(Duration::from_secs(15), "the standby to take over", || async {
        term(&env).await == 2
    })
    .await;
    let took_over_at: chrono::DateTime<Utc> =
        sqlx::query_scalar("SELECT acquired_at FROM leader_leases WHERE name = 'scheduler'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    println!("takeover after {} ms", (took_over_at - killed_at).num_milliseconds());
    wait_until(Duration::from_secs(60), "three more syncs of every user", || async {
        users_synced_at_least(&env, 5).await == ids.len() as i64
    })
    .await;

    stop_gracefully(standby);
    worker.stop().await;

    let interval = chrono::Duration::seconds(4);
    for (user, sessions) in sessions_by_user(&env).await {
        let mut slots: Vec<_> = sessions[1..].iter().map(|session| session.scheduled_at).collect();
        slots.sort();
        let duplicates = slots.windows(2).filter(|pair| pair[0] == pair[1]).count();
        assert!(
            duplicates <= 1,
            "{user} was synced more than once for a slot twice: {sessions:?}"
        );
        slots.dedup();
        for pair in slots.windows(2) {
            assert_eq!(pair[1] - pair[0], interval, "{user} skipped a slot: {sessions:?}");
        }
    }
    env.cleanup().await;
}

// The forwarder runs on this runtime: stopping a service blocks one thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_gauge_falls_before_a_standby_takes_over_from_a_leader_cut_off_from_postgresql() {
    use syncfleet_testkit::{Forwarder, becomes_ready, free_port, gauge};

    const GAUGE: &str = "syncfleet_scheduler_leader";
    let env = TestEnv::new().await;
    let spawn = |database_url: &str, ops_port: u16| {
        env.spawn(
            "syncfleet-scheduler",
            &[
                ("SYNCFLEET_DATABASE_URL", database_url),
                ("SYNCFLEET_OPS_LISTEN", &format!("127.0.0.1:{ops_port}")),
                ("SYNCFLEET_SCHEDULER_TICK", "100ms"),
                ("SYNCFLEET_LEADER_LEASE", "2s"),
            ],
        )
    };
    // The leader reaches PostgreSQL through a forwarder the test can cut.
    let database = Forwarder::to_url(&env.database_url);
    database.open().await;
    let (leader_port, standby_port) = (free_port(), free_port());
    let leader = spawn(&database.url(&env.database_url), leader_port);
    wait_until(Duration::from_secs(30), "a leader", || async {
        term(&env).await == 1 && gauge(leader_port, GAUGE).await == Some(1)
    })
    .await;
    let standby = spawn(&env.database_url, standby_port);
    becomes_ready(standby_port).await;
    assert_eq!(gauge(standby_port, GAUGE).await, Some(0));

    database.close();
    let mut samples = Vec::new();
    loop {
        let sample = (gauge(leader_port, GAUGE).await, gauge(standby_port, GAUGE).await);
        samples.push(sample);
        assert_ne!(
            sample,
            (Some(1), Some(1)),
            "both schedulers report leading; samples so far: {samples:?}"
        );
        if sample.1 == Some(1) {
            break;
        }
        assert!(samples.len() < 3_000, "the standby never took over");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(term(&env).await, 2, "the standby holds the next term");
    let leader_fell = samples.iter().position(|sample| sample.0 == Some(0));
    println!(
        "{} samples until the takeover; the cut-off leader's gauge fell at sample {leader_fell:?}",
        samples.len()
    );
    assert!(leader_fell.is_some());

    // Back on PostgreSQL, the deposed leader stays at 0 (and the fence
    // keeps it from scheduling).
    database.open().await;
    becomes_ready(leader_port).await;
    for _ in 0..20 {
        assert_eq!(gauge(leader_port, GAUGE).await, Some(0));
        assert_eq!(gauge(standby_port, GAUGE).await, Some(1));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_gracefully(leader);
    stop_gracefully(standby);
    env.cleanup().await;
}
