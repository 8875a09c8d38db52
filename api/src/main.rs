use std::sync::Arc;

use anyhow::Context;
use secrecy::ExposeSecret;
use syncfleet_api::{ApiConfig, AppState};
use syncfleet_common::{
    db,
    ops::Health,
    queue::{Publisher, Topology},
    reconnect::{self, Failure},
    secrets::{self, KeyRing},
    shutdown, telemetry,
};
use tokio_util::sync::CancellationToken;
use tracing::info;
use uuid::Uuid;

const USAGE: &str = "usage: syncfleet-api [serve | migrate | token create --role admin|org_admin|user \
                     [--organization ID] [--user ID] [--label TEXT] | secrets reencrypt [--batch N]]";

fn main() -> anyhow::Result<()> {
    telemetry::main_with("syncfleet-api", |source| async move {
        run(ApiConfig::from_source(&source)?).await
    })
}

async fn run(config: ApiConfig) -> anyhow::Result<()> {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    match arguments.first().map(String::as_str).unwrap_or("serve") {
        "migrate" => {
            // A migration job may start before the database: it waits for it,
            // and fails only if a migration fails on a reachable database.
            let shutdown = shutdown::on_signal();
            if !db::wait_until_reachable(&config.common, &shutdown)
                .await
                .context("connecting to PostgreSQL")?
            {
                anyhow::bail!("stopped before PostgreSQL could be reached; no migration was applied");
            }
            let pool = db::connect(&config.common).await.context("connecting to PostgreSQL")?;
            db::migrate(&pool).await.context("applying migrations")?;
            info!("Migrations applied.");
            Ok(())
        }
        "token" if arguments.get(1).map(String::as_str) == Some("create") => {
            create_token(&connect(&config).await?, &arguments[2..]).await
        }
        "secrets" if arguments.get(1).map(String::as_str) == Some("reencrypt") => {
            reencrypt(&connect(&config).await?, config.key_ring.as_ref(), &arguments[2..]).await
        }
        "serve" => serve(config).await,
        other => anyhow::bail!("unknown command {other:?}; {USAGE}"),
    }
}

/// The pool of a one-off command, connected at once: an operator running it
/// is told at once when PostgreSQL cannot be reached.
async fn connect(config: &ApiConfig) -> anyhow::Result<sqlx::PgPool> {
    db::connect(&config.common).await.context("connecting to PostgreSQL")
}

/// Serves the API. The listener and the probes come first: while PostgreSQL
/// is unreachable `/healthz` answers and `/readyz` fails, and the process
/// waits for it (with backoff) instead of exiting.
async fn serve(config: ApiConfig) -> anyhow::Result<()> {
    let pool = db::lazy_pool(&config.common).context("SYNCFLEET_DATABASE_URL")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let topology = Topology::new(config.common.queue_prefix.clone(), config.common.delivery_limit);
    let publisher = Publisher::lazy(config.common.amqp_url.clone(), "syncfleet-api", topology);
    let state = AppState {
        pool: pool.clone(),
        publisher: Arc::new(publisher),
        key_ring: config.key_ring.clone(),
        url_policy: config.url_policy,
        console: Arc::new(syncfleet_api::console::Console::new(
            &config.common,
            config.rabbitmq_management_url.as_ref(),
        )),
    };
    let shutdown = shutdown::on_signal();
    let health = Health::starting(false);
    info!(address = %config.listen, "API listening.");
    let server = tokio::spawn(syncfleet_api::serve_with_health(
        listener,
        state,
        health.clone(),
        shutdown.clone(),
        config.drain_delay,
    ));
    let started = start(&config, &pool, &shutdown).await;
    if let Ok(true) = started {
        health.set_started();
    }
    if started.is_err() {
        shutdown.cancel();
    }
    server.await.context("the server task")??;
    started?;
    info!("API stopped.");
    Ok(())
}

/// Waits for PostgreSQL, then stores the bootstrap admin token; `false` when
/// shutdown came first.
async fn start(config: &ApiConfig, pool: &sqlx::PgPool, shutdown: &CancellationToken) -> anyhow::Result<bool> {
    if !db::wait_until_reachable(&config.common, shutdown)
        .await
        .context("connecting to PostgreSQL")?
    {
        return Ok(false);
    }
    if let Some(token) = &config.bootstrap_admin_token {
        let stored = reconnect::until_reached(shutdown, "PostgreSQL", || async {
            syncfleet_api::auth::store_bootstrap_token(pool, token.expose_secret())
                .await
                .map_err(|error| match db::is_unreachable(&error) {
                    true => Failure::Unreachable(error),
                    false => Failure::Fatal(error),
                })
        })
        .await
        .context("storing the bootstrap admin token")?;
        if stored.is_none() {
            return Ok(false);
        }
        info!("Bootstrap admin token stored.");
    }
    Ok(true)
}

/// Reseals every stored credential under the newest configured key.
async fn reencrypt(pool: &sqlx::PgPool, ring: Option<&KeyRing>, arguments: &[String]) -> anyhow::Result<()> {
    let ring = ring.context("SYNCFLEET_ENCRYPTION_KEYS is empty: configure the old and the new key")?;
    let batch = match arguments {
        [] => 500,
        [flag, value] if flag == "--batch" => value
            .parse::<i64>()
            .ok()
            .filter(|batch| *batch > 0)
            .context("--batch must be a positive integer")?,
        _ => anyhow::bail!("{USAGE}"),
    };
    let done = secrets::reencrypt_all(pool, ring, batch)
        .await
        .context("re-encrypting credentials")?;
    info!(
        resealed = done.resealed,
        already_current = done.current,
        key_version = ring.current_version(),
        "Credentials re-encrypted."
    );
    println!(
        "resealed {} credentials; {} were already under key version {}",
        done.resealed,
        done.current,
        ring.current_version()
    );
    Ok(())
}

/// Mints a bearer token and prints it once; only its hash is stored.
async fn create_token(pool: &sqlx::PgPool, arguments: &[String]) -> anyhow::Result<()> {
    let (mut role, mut organization, mut user, mut label) = (None, None, None, String::new());
    let mut iter = arguments.iter();
    while let Some(flag) = iter.next() {
        let value = iter.next().with_context(|| format!("{flag} needs a value; {USAGE}"))?;
        match flag.as_str() {
            "--role" => role = Some(value.clone()),
            "--organization" => organization = Some(value.parse::<Uuid>().context("--organization must be a UUID")?),
            "--user" => user = Some(value.parse::<Uuid>().context("--user must be a UUID")?),
            "--label" => label = value.clone(),
            other => anyhow::bail!("unknown option {other}; {USAGE}"),
        }
    }
    let role = role.with_context(|| format!("--role is required; {USAGE}"))?;
    match (role.as_str(), organization, user) {
        ("admin", None, None) | ("org_admin", Some(_), None) | ("user", None, Some(_)) => {}
        ("admin", _, _) => anyhow::bail!("an admin token takes neither --organization nor --user"),
        ("org_admin", _, _) => anyhow::bail!("an org_admin token needs --organization (and no --user)"),
        ("user", _, _) => anyhow::bail!("a user token needs --user (and no --organization)"),
        (other, _, _) => anyhow::bail!("--role must be admin, org_admin or user, not {other:?}"),
    }
    let token = syncfleet_api::auth::create_token(pool, &role, organization, user, &label)
        .await
        .context("storing the token (does the organization or user exist?)")?;
    println!("{token}");
    Ok(())
}
