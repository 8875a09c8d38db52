use std::{ffi::OsString, sync::Arc};

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, error::ErrorKind};
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

/// The Syncfleet api, and the operator's one-off commands.
///
/// Settings come from the environment (`SYNCFLEET_*`); the command line only
/// picks the command and its flags.
#[derive(Parser)]
#[command(name = "syncfleet-api", version)]
struct Cli {
    /// What to run; `serve` when none is given.
    #[command(subcommand)]
    command: Option<Command>,
}

/// The api's commands.
#[derive(Subcommand)]
enum Command {
    /// Serves the API, its probes and metrics (the default).
    Serve,
    /// Applies the SQL migrations and exits; waits for PostgreSQL first.
    Migrate,
    /// Bearer tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Stored credentials.
    #[command(subcommand)]
    Secrets(SecretsCommand),
}

/// `syncfleet-api token ...`.
#[derive(Subcommand)]
enum TokenCommand {
    /// Mints a bearer token and prints it once; only its SHA-256 is stored.
    Create(CreateToken),
}

/// `syncfleet-api secrets ...`.
#[derive(Subcommand)]
enum SecretsCommand {
    /// Reseals every stored credential under the newest key of
    /// SYNCFLEET_ENCRYPTION_KEYS.
    Reencrypt(Reencrypt),
}

/// The flags of `token create`.
#[derive(clap::Args)]
struct CreateToken {
    /// The token's role: admin, org_admin (with --organization) or user (with --user).
    #[arg(long, value_name = "ROLE", value_parser = role)]
    role: String,
    /// The organization of an org_admin token.
    #[arg(long, value_name = "ID", value_parser = uuid)]
    organization: Option<Uuid>,
    /// The user of a user token.
    #[arg(long, value_name = "ID", value_parser = uuid)]
    user: Option<Uuid>,
    /// What the token is for, or whose it is; the actor it records.
    #[arg(long, value_name = "TEXT")]
    label: Option<String>,
}

/// The flags of `secrets reencrypt`.
#[derive(clap::Args)]
struct Reencrypt {
    /// Credentials resealed per transaction.
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = positive)]
    batch: i64,
}

/// One of the roles a token can have.
fn role(value: &str) -> Result<String, String> {
    match value {
        "admin" | "org_admin" | "user" => Ok(value.to_owned()),
        _ => Err("must be admin, org_admin or user".to_owned()),
    }
}

/// An organization's or a user's id.
fn uuid(value: &str) -> Result<Uuid, String> {
    value.parse().map_err(|_| "must be a UUID".to_owned())
}

/// A batch size.
fn positive(value: &str) -> Result<i64, String> {
    match value.parse::<i64>() {
        Ok(number) if number > 0 => Ok(number),
        _ => Err("must be a positive integer".to_owned()),
    }
}

impl CreateToken {
    /// Whether the role's scope is given, and only it.
    fn check(&self) -> Result<(), &'static str> {
        match (self.role.as_str(), self.organization, self.user) {
            ("admin", None, None) | ("org_admin", Some(_), None) | ("user", None, Some(_)) => Ok(()),
            ("admin", _, _) => Err("an admin token takes neither --organization nor --user"),
            ("org_admin", _, _) => Err("an org_admin token needs --organization (and no --user)"),
            _ => Err("a user token needs --user (and no --organization)"),
        }
    }
}

/// Reads the command line: clap checks each flag, [`CreateToken::check`] the
/// flags that go together. A refusal is clap's error (status 2) with the
/// usage of the subcommand given.
fn parse(arguments: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> Result<Command, clap::Error> {
    let mut cli = Cli::command();
    let matches = cli.try_get_matches_from_mut(arguments)?;
    let command = Cli::from_arg_matches(&matches)
        .map_err(|error| error.format(&mut cli))?
        .command
        .unwrap_or(Command::Serve);
    if let Command::Token(TokenCommand::Create(create)) = &command
        && let Err(message) = create.check()
    {
        cli.build();
        let (mut subcommand, mut matched) = (cli, &matches);
        while let Some((name, inner)) = matched.subcommand()
            && let Some(found) = subcommand.find_subcommand(name).cloned()
        {
            (subcommand, matched) = (found, inner);
        }
        return Err(subcommand.error(ErrorKind::ArgumentConflict, message));
    }
    Ok(command)
}

fn main() -> anyhow::Result<()> {
    let command = parse(std::env::args_os()).unwrap_or_else(|error| error.exit());
    telemetry::main_with("syncfleet-api", |source| async move {
        run(ApiConfig::from_source(&source)?, command).await
    })
}

async fn run(config: ApiConfig, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Migrate => {
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
        Command::Token(TokenCommand::Create(create)) => create_token(&connect(&config).await?, &create).await,
        Command::Secrets(SecretsCommand::Reencrypt(Reencrypt { batch })) => {
            reencrypt(&connect(&config).await?, config.key_ring.as_ref(), batch).await
        }
        Command::Serve => serve(config).await,
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

/// Reseals every stored credential under the newest configured key, `batch`
/// per transaction.
async fn reencrypt(pool: &sqlx::PgPool, ring: Option<&KeyRing>, batch: i64) -> anyhow::Result<()> {
    let ring = ring.context("SYNCFLEET_ENCRYPTION_KEYS is empty: configure the old and the new key")?;
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
async fn create_token(pool: &sqlx::PgPool, create: &CreateToken) -> anyhow::Result<()> {
    let label = create.label.as_deref().unwrap_or_default();
    let token = syncfleet_api::auth::create_token(pool, &create.role, create.organization, create.user, label)
        .await
        .context("storing the token (does the organization or user exist?)")?;
    println!("{token}");
    Ok(())
}
