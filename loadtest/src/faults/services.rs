//! The fault test's own PostgreSQL cluster, RabbitMQ node and Redis, on free
//! ports under the run's folder, so that stopping and killing them never
//! touches the services the other tests of this machine share.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::Context;
use tokio::{
    process::{Child, Command},
    time::Instant,
};

use crate::fleet::processes::free_port;

/// Where Debian installs PostgreSQL's server binaries, one folder a version.
const POSTGRES_LIB: &str = "/usr/lib/postgresql";
/// The OS user a cluster runs as (PostgreSQL refuses to run as root).
const POSTGRES_USER: &str = "postgres";
/// The cluster's database.
const DATABASE: &str = "syncfleet_faults";

/// How `pg_ctl stop` stops the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Aborts every backend at once, recovery at the next start (a crash).
    Immediate,
    /// Disconnects every client and shuts down cleanly.
    Fast,
}

impl StopMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Immediate => "immediate",
            Self::Fast => "fast",
        }
    }
}

/// The run's PostgreSQL: a private cluster when `initdb` is there, else a
/// scratch database on the shared server (then it is never stopped).
pub enum Postgres {
    Private { bin: PathBuf, data: PathBuf, port: u16 },
    Shared { server: String },
}

impl Postgres {
    /// Creates and starts a private cluster under `base`, or falls back to a
    /// scratch database on the shared server (the reason is printed).
    pub async fn start(base: &Path) -> anyhow::Result<Self> {
        let Some(bin) = server_binaries() else {
            eprintln!("no initdb under {POSTGRES_LIB}: a scratch database on the shared PostgreSQL instead");
            return Self::shared().await;
        };
        let initdb = bin.join("initdb");
        let data = base.join("pg");
        std::fs::create_dir_all(&data)?;
        run("chown", &["-R", POSTGRES_USER, &data.to_string_lossy()]).await?;
        as_postgres(
            &initdb,
            &[
                "-D",
                &data.to_string_lossy(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        )
        .await?;
        let cluster = Self::Private {
            bin,
            data,
            port: free_port()?.port(),
        };
        cluster.boot().await?;
        let mut admin = cluster.admin().await?;
        sqlx::query(&format!("CREATE DATABASE {DATABASE}"))
            .execute(&mut admin)
            .await?;
        Ok(cluster)
    }

    async fn shared() -> anyhow::Result<Self> {
        let server = std::env::var("SYNCFLEET_BENCH_DATABASE_SERVER")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
        let cluster = Self::Shared { server };
        let mut admin = cluster.admin().await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
            .execute(&mut admin)
            .await?;
        sqlx::query(&format!("CREATE DATABASE {DATABASE}"))
            .execute(&mut admin)
            .await?;
        Ok(cluster)
    }

    /// Whether the cluster is the run's own (the faults that stop it apply).
    pub fn is_private(&self) -> bool {
        matches!(self, Self::Private { .. })
    }

    fn server(&self) -> String {
        match self {
            Self::Private { port, .. } => format!("postgres://postgres@127.0.0.1:{port}"),
            Self::Shared { server } => server.clone(),
        }
    }

    /// The run's database URL.
    pub fn url(&self) -> String {
        format!("{}/{DATABASE}", self.server())
    }

    async fn admin(&self) -> anyhow::Result<sqlx::PgConnection> {
        use sqlx::Connection;
        Ok(sqlx::PgConnection::connect(&format!("{}/postgres", self.server())).await?)
    }

    /// Starts the private cluster and waits until it accepts connections.
    pub async fn boot(&self) -> anyhow::Result<()> {
        let Self::Private { bin, data, port } = self else {
            return Ok(());
        };
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c max_connections=400 \
             -c fsync=off -c full_page_writes=off -c shared_buffers=64MB",
            data.display()
        );
        as_postgres(
            &bin.join("pg_ctl"),
            &[
                "-D",
                &data.to_string_lossy(),
                "-l",
                &data.join("server.log").to_string_lossy(),
                "-o",
                &options,
                "-w",
                "-t",
                "120",
                "start",
            ],
        )
        .await
    }

    /// Stops the private cluster with `mode`.
    pub async fn stop(&self, mode: StopMode) -> anyhow::Result<()> {
        let Self::Private { bin, data, .. } = self else {
            anyhow::bail!("the shared PostgreSQL is never stopped");
        };
        as_postgres(
            &bin.join("pg_ctl"),
            &["-D", &data.to_string_lossy(), "-m", mode.as_str(), "-w", "stop"],
        )
        .await
    }

    /// Stops the cluster for good (or drops the scratch database).
    pub async fn remove(&self) {
        match self {
            Self::Private { .. } => {
                let _ = self.stop(StopMode::Immediate).await;
            }
            Self::Shared { .. } => {
                if let Ok(mut admin) = self.admin().await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                }
            }
        }
    }
}

/// The newest installed version's binaries that include `initdb`.
fn server_binaries() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(POSTGRES_LIB)
        .ok()?
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let version = path.file_name()?.to_str()?.parse().ok()?;
            Some((version, path.join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

async fn run(program: &str, arguments: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(program)
        .args(arguments)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {program}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{program} {} failed ({}): {}",
        arguments.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

async fn as_postgres(program: &Path, arguments: &[&str]) -> anyhow::Result<()> {
    let program = program.to_string_lossy();
    let mut all = vec!["-u", POSTGRES_USER, "--", program.as_ref()];
    all.extend_from_slice(arguments);
    run("runuser", &all).await
}

/// A private RabbitMQ node (as the test kit's, with a kill -9 of its VM).
pub struct Rabbit {
    node: String,
    base: PathBuf,
    pub port: u16,
    dist_port: u16,
}

impl Rabbit {
    /// Starts a node under `base` and waits until it is up.
    pub async fn start(base: &Path) -> anyhow::Result<Self> {
        let base = base.join("rabbitmq");
        std::fs::create_dir_all(base.join("log"))?;
        // No plugins: the management plugin would take a port of its own.
        std::fs::write(base.join("enabled_plugins"), "[].\n")?;
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let node = Self {
            node: format!("sffaults{suffix}@localhost"),
            base,
            port: free_port()?.port(),
            dist_port: free_port()?.port(),
        };
        node.boot().await?;
        Ok(node)
    }

    /// The node's AMQP URL.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn command(&self, program: &str) -> Command {
        // Debian's /usr/sbin wrappers switch to the rabbitmq user, who cannot
        // write this node's folders; the scripts behind them run as we are.
        let scripts = PathBuf::from("/usr/lib/rabbitmq/bin");
        let program = if scripts.join(program).exists() {
            scripts.join(program)
        } else {
            PathBuf::from(program)
        };
        let mut command = Command::new(program);
        command
            .env("HOME", &self.base)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", self.base.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.base.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", self.base.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", self.base.join("node.pid"))
            .env("RABBITMQ_CONFIG_FILE", self.base.join("none"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", self.base.join("none-advanced.config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    /// Starts the node and waits until it accepts AMQP connections.
    pub async fn boot(&self) -> anyhow::Result<()> {
        let status = self.command("rabbitmq-server").arg("-detached").status().await?;
        anyhow::ensure!(status.success(), "rabbitmq-server -detached failed");
        let address = format!("127.0.0.1:{}", self.port);
        let deadline = Instant::now() + Duration::from_secs(120);
        while tokio::net::TcpStream::connect(&address).await.is_err() {
            anyhow::ensure!(Instant::now() < deadline, "the private RabbitMQ node did not start");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let status = self
            .command("rabbitmqctl")
            .args(["-n", &self.node, "await_startup", "--timeout", "90"])
            .status()
            .await?;
        anyhow::ensure!(status.success(), "the private RabbitMQ node did not finish starting");
        Ok(())
    }

    /// Stops the node gracefully.
    pub async fn stop(&self) -> anyhow::Result<()> {
        let status = self
            .command("rabbitmqctl")
            .args(["-n", &self.node, "stop"])
            .status()
            .await?;
        anyhow::ensure!(status.success(), "rabbitmqctl stop failed");
        Ok(())
    }

    /// Kills the node's Erlang VM (SIGKILL), by the pid it wrote.
    pub async fn kill(&self) -> anyhow::Result<()> {
        let pid =
            std::fs::read_to_string(self.base.join("node.pid")).context("reading the RabbitMQ node's pid file")?;
        let pid = pid.trim().to_owned();
        anyhow::ensure!(pid.parse::<u32>().is_ok(), "the node's pid file holds {pid:?}");
        run("kill", &["-KILL", &pid]).await?;
        let address = format!("127.0.0.1:{}", self.port);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(&address).await.is_ok() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Stops the node for good.
    pub async fn remove(&self) {
        if self.stop().await.is_err() {
            let _ = self.kill().await;
        }
    }
}

/// A private Redis without persistence.
pub struct Redis {
    pub port: u16,
    log: PathBuf,
    child: Option<Child>,
}

impl Redis {
    /// Starts it on a free port, its output in `logs/redis.log`.
    pub async fn start(logs: &Path) -> anyhow::Result<Self> {
        let mut redis = Self {
            port: free_port()?.port(),
            log: logs.join("redis.log"),
            child: None,
        };
        redis.boot().await?;
        Ok(redis)
    }

    /// The Redis URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// (Re)starts the server on its port and waits until it answers.
    pub async fn boot(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting redis-server")?;
        self.child = Some(child);
        let address = format!("127.0.0.1:{}", self.port);
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(&address).await.is_err() {
            anyhow::ensure!(Instant::now() < deadline, "the private Redis did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Kills the server (SIGKILL).
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }
}
