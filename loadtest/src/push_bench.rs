//! The push benchmark, on a fresh database and queue prefix:
//! 1. a customization push to every user of an organization of N users
//!    (plus the pusher), through the api (in process, over real HTTP) and
//!    W workers: the time from the request to the push's completion, as its
//!    progress reports it;
//! 2. during the push, S recipients hold live notification streams (SSE):
//!    the time from each notification's creation (its batch's transaction)
//!    to its event at the client;
//! 3. then P probes, one at a time: a notification inserted and announced
//!    with `pg_notify` in one transaction; the time from its commit to the
//!    event at the client (PostgreSQL delivery, the api's listener and
//!    fan-out, the stream).

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use syncfleet_api::AppState;
use syncfleet_common::{config::Source, db, queue::Publisher};
use syncfleet_worker::{WorkerConfig, sync::SettingsCheck};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::scratch::{Scratch, count, latency_summary};

/// The benchmark's flags.
#[derive(clap::Args)]
pub struct Options {
    /// Recipients of the push: the users of its organization.
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = count)]
    users: usize,
    /// Workers applying the push.
    #[arg(long, value_name = "W", default_value_t = 2, value_parser = count)]
    workers: usize,
    /// Recipients holding a live notification stream; at most --users.
    #[arg(long, value_name = "S", default_value_t = 50, value_parser = count)]
    streams: usize,
    /// `pg_notify` probes after the push, one at a time.
    #[arg(long, value_name = "P", default_value_t = 200, value_parser = count)]
    probes: usize,
    /// Recipients per transaction.
    #[arg(long, value_name = "B", default_value_t = 1000, value_parser = count)]
    batch: usize,
}

impl Options {
    /// What clap cannot check alone: flags that bound one another.
    pub fn check(&self) -> Result<(), &'static str> {
        match self.streams <= self.users {
            true => Ok(()),
            false => Err("--streams is at most --users"),
        }
    }
}

/// One event a stream received.
struct Received {
    id: Uuid,
    created_at: DateTime<Utc>,
    at: Instant,
    wall: DateTime<Utc>,
}

pub async fn run(source: &Source, options: &Options) -> anyhow::Result<()> {
    let scratch = Scratch::create("syncfleet_push_bench", "bench").await?;
    let batch = options.batch.to_string();
    let mut settings = source.clone();
    settings.extend([
        ("SYNCFLEET_DATABASE_URL", scratch.database_url.as_str()),
        ("SYNCFLEET_QUEUE_PREFIX", scratch.prefix.as_str()),
        ("SYNCFLEET_DATABASE_MAX_CONNECTIONS", "20"),
        ("SYNCFLEET_PUSH_BATCH_SIZE", batch.as_str()),
    ]);
    let worker_config = WorkerConfig::from_source(&settings)?;
    let pool = db::connect(&worker_config.common).await?;
    db::migrate(&pool).await?;

    let seeding = Instant::now();
    let (organization, pusher, streamed) = seed(&pool, options.users, options.streams).await?;
    eprintln!(
        "seeded {} users in {:.1}s",
        options.users + 1,
        seeding.elapsed().as_secs_f64()
    );
    let pusher_token =
        syncfleet_api::auth::create_token(&pool, "user", None, Some(pusher), "pusher@bench.test").await?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let topology = syncfleet_common::queue::Topology::new(
        worker_config.common.queue_prefix.clone(),
        worker_config.common.delivery_limit,
    );
    let state = AppState {
        pool: pool.clone(),
        publisher: Arc::new(Publisher::lazy(
            worker_config.common.amqp_url.clone(),
            "bench api",
            topology.clone(),
        )),
        key_ring: None,
        url_policy: syncfleet_connectors::ssrf::UrlPolicy::STRICT,
        console: Arc::new(syncfleet_api::console::Console::new(&worker_config.common, None)),
    };
    let api_stop = CancellationToken::new();
    let api = tokio::spawn(syncfleet_api::serve(listener, state, api_stop.clone(), Duration::ZERO));
    let base = format!("http://{address}");
    let client = reqwest::Client::new();

    let workers: Vec<_> = (0..options.workers)
        .map(|index| {
            let mut config = worker_config.clone();
            config.worker_id = format!("bench-worker-{index}");
            config.ops_listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
            let token = CancellationToken::new();
            let handle = tokio::spawn(syncfleet_worker::run(config, Arc::new(SettingsCheck), token.clone()));
            (token, handle)
        })
        .collect();

    // The live streams of some recipients.
    let (events, mut received) = mpsc::unbounded_channel::<Received>();
    let mut streams = Vec::with_capacity(streamed.len());
    for user in &streamed {
        let token = syncfleet_api::auth::create_token(&pool, "user", None, Some(*user), "bench recipient").await?;
        let stream = open_stream(address, &token).await?;
        streams.push(tokio::spawn(read_events(stream, events.clone())));
    }
    drop(events);

    // 1. The push.
    let requested = Instant::now();
    let response = client
        .post(format!("{base}/v1/pushes"))
        .bearer_auth(&pusher_token)
        .json(&serde_json::json!({"all": true}))
        .send()
        .await?;
    let status = response.status();
    let body: serde_json::Value = response.json().await?;
    anyhow::ensure!(status.as_u16() == 202, "the push answered {status}: {body}");
    let accepted = requested.elapsed();
    let push: Uuid = body["id"].as_str().context("the answer names the push")?.parse()?;
    let view = loop {
        let view: serde_json::Value = client
            .get(format!("{base}/v1/pushes/{push}"))
            .bearer_auth(&pusher_token)
            .send()
            .await?
            .json()
            .await?;
        if view["status"] == "completed" {
            break view;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let push_seconds = requested.elapsed().as_secs_f64();
    eprintln!(
        "push to {} recipients: accepted in {:.0} ms, completed in {push_seconds:.1}s ({:.0} recipients/s)",
        view["total"],
        accepted.as_secs_f64() * 1000.0,
        options.users as f64 / push_seconds
    );
    anyhow::ensure!(
        view["applied"] == serde_json::json!(options.users),
        "not every recipient applied: {view}"
    );

    // 2. The push's notifications over the streams.
    let mut during_push = Vec::with_capacity(streamed.len());
    let deadline = Instant::now() + Duration::from_secs(30);
    while during_push.len() < streamed.len() && Instant::now() < deadline {
        if let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(1), received.recv()).await {
            during_push.push((event.wall - event.created_at).to_std().unwrap_or_default());
        }
    }
    anyhow::ensure!(
        during_push.len() == streamed.len(),
        "{} of {} streams got the push's notification",
        during_push.len(),
        streamed.len()
    );
    eprintln!(
        "push notification, created to received: {}",
        latency_summary(&during_push)
    );

    // 3. Probes: commit to event.
    let mut probes = Vec::with_capacity(options.probes);
    let mut early: HashMap<Uuid, Instant> = HashMap::new();
    for index in 0..options.probes {
        let user = streamed[index % streamed.len()];
        let id = Uuid::new_v4();
        let mut tx = pool.begin().await?;
        sqlx::query(
            "WITH note AS (INSERT INTO notifications (id, user_id, kind, title, body) \
                           VALUES ($1, $2, 'probe', 'Probe', 'A latency probe.') \
                           RETURNING id, user_id, kind, title, body, payload, created_at, read_at) \
             SELECT pg_notify('syncfleet_notifications', row_to_json(note)::text) FROM note",
        )
        .bind(id)
        .bind(user)
        .execute(&mut *tx)
        .await?;
        let committing = Instant::now();
        tx.commit().await?;
        let arrived = loop {
            if let Some(at) = early.remove(&id) {
                break at;
            }
            let event = tokio::time::timeout(Duration::from_secs(10), received.recv())
                .await
                .context("a probe's event did not arrive")?
                .context("the streams ended")?;
            if event.id == id {
                break event.at;
            }
            early.insert(event.id, event.at);
        };
        probes.push(arrived.saturating_duration_since(committing));
    }
    eprintln!("probe, commit to received: {}", latency_summary(&probes));

    let server_seconds: (f64,) =
        sqlx::query_as("SELECT EXTRACT(EPOCH FROM finished_at - created_at)::float8 FROM pushes WHERE id = $1")
            .bind(push)
            .fetch_one(&pool)
            .await?;
    for (token, handle) in workers {
        token.cancel();
        handle.await??;
    }
    api_stop.cancel();
    for stream in streams {
        stream.abort();
    }
    api.await??;
    let report = serde_json::json!({
        "recipients": options.users,
        "organization": organization,
        "workers": options.workers,
        "batch": options.batch,
        "push": {
            "accepted_ms": (accepted.as_secs_f64() * 1000.0).round(),
            "request_to_completed_s": (push_seconds * 10.0).round() / 10.0,
            "recorded_to_finished_s": (server_seconds.0 * 10.0).round() / 10.0,
            "recipients_per_second": (options.users as f64 / push_seconds).round(),
        },
        "push_notification_created_to_received": latency_summary(&during_push),
        "notify_commit_to_received": latency_summary(&probes),
        "streams": options.streams,
        "machine": { "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    pool.close().await;
    scratch.remove(&worker_config.common).await?;
    Ok(())
}

/// One organization: the pusher (its admin, with a saved customization)
/// and `users` colleagues; answers the organization, the pusher and the
/// colleagues that hold a stream.
async fn seed(pool: &PgPool, users: usize, streams: usize) -> anyhow::Result<(Uuid, Uuid, Vec<Uuid>)> {
    let organization = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO organizations (id, external_id, name, access_type) VALUES ($1, 'bench', 'Bench', 'office365')",
    )
    .bind(organization)
    .execute(pool)
    .await?;
    let pusher = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO users (id, organization_id, name, email, role) VALUES ($1, $2, 'Ada Pusher', 'pusher@bench.test', 'org_admin')",
    )
    .bind(pusher)
    .bind(organization)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO users (id, organization_id, name, email) \
         SELECT gen_random_uuid(), $2, 'User ' || n, 'user' || n || '@bench.test' FROM generate_series(1, $1) AS n",
    )
    .bind(users as i64)
    .bind(organization)
    .execute(pool)
    .await?;
    // A document of the size the add-in saves: a dozen objects and their fields.
    let objects: serde_json::Map<String, serde_json::Value> = (0..12)
        .map(|index| {
            (
                format!("Object{index}__c"),
                serde_json::json!({
                    "visible": true,
                    "order": index,
                    "fields": (0..15).map(|field| format!("Field{field}__c")).collect::<Vec<_>>(),
                }),
            )
        })
        .collect();
    let document = serde_json::json!({"schema_version": 1, "objects": objects, "behavior": {"auto_open": true}});
    sqlx::query("INSERT INTO customizations (user_id, document) VALUES ($1, $2)")
        .bind(pusher)
        .bind(&document)
        .execute(pool)
        .await?;
    sqlx::query("VACUUM ANALYZE").execute(pool).await?;
    let streamed = sqlx::query_scalar("SELECT id FROM users WHERE id <> $1 ORDER BY random() LIMIT $2")
        .bind(pusher)
        .bind(streams as i64)
        .fetch_all(pool)
        .await?;
    Ok((organization, pusher, streamed))
}

/// Opens a notification stream and reads past its head.
async fn open_stream(address: std::net::SocketAddr, token: &str) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(address).await?;
    let request = format!(
        "GET /v1/me/notifications/stream HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\
         Accept: text/event-stream\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0_u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        anyhow::ensure!(stream.read(&mut byte).await? == 1, "the stream closed in its head");
        head.push(byte[0]);
    }
    anyhow::ensure!(
        head.starts_with(b"HTTP/1.1 200"),
        "the stream answered {}",
        String::from_utf8_lossy(&head)
    );
    Ok(stream)
}

/// Sends each notification event of a stream to `events` as it arrives.
async fn read_events(mut stream: TcpStream, events: mpsc::UnboundedSender<Received>) {
    let mut buffer = String::new();
    let mut chunk = vec![0_u8; 16 * 1024];
    loop {
        let read = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        let at = Instant::now();
        let wall = Utc::now();
        buffer.push_str(&String::from_utf8_lossy(&chunk[..read]));
        while let Some(start) = buffer.find("data: ") {
            let Some(end) = buffer[start..].find('\n') else { break };
            let data = buffer[start + 6..start + end].to_owned();
            buffer.drain(..start + end);
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&data) else {
                continue;
            };
            let id = value["id"].as_str().and_then(|id| id.parse().ok());
            let created_at = value["created_at"].as_str().and_then(|at| at.parse().ok());
            if let (Some(id), Some(created_at)) = (id, created_at)
                && events
                    .send(Received {
                        id,
                        created_at,
                        at,
                        wall,
                    })
                    .is_err()
            {
                return;
            }
        }
    }
}
