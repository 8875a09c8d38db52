//! A RabbitMQ node of a test's own, on free ports, so the test can stop and
//! restart it without touching the broker the other tests use.

use std::{path::PathBuf, time::Duration};

use tokio::process::Command;

use uuid::Uuid;

/// A private RabbitMQ node; stopped and removed on drop.
pub struct PrivateBroker {
    node: String,
    base: PathBuf,
    /// Its AMQP port.
    pub port: u16,
    dist_port: u16,
}

impl PrivateBroker {
    /// Starts a node and waits until it accepts AMQP connections.
    pub async fn start() -> Self {
        let id = &Uuid::new_v4().simple().to_string()[..10];
        let base = std::env::temp_dir().join(format!("sf-broker-{id}"));
        std::fs::create_dir_all(base.join("log")).unwrap();
        std::fs::write(base.join("enabled_plugins"), "[].\n").unwrap();
        let port = free_port();
        let broker = Self {
            node: format!("sf{id}@localhost"),
            base,
            port,
            dist_port: free_port(),
        };
        broker.boot().await;
        broker
    }

    /// The node's AMQP URL.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn command(&self, program: &str) -> Command {
        Command::from(self.std_command(program))
    }

    fn std_command(&self, program: &str) -> std::process::Command {
        // Debian's /usr/sbin wrappers switch to the rabbitmq user, who cannot
        // write this node's folders; the scripts behind them run as we are.
        // The private HOME gives the node and rabbitmqctl one Erlang cookie.
        let scripts = PathBuf::from("/usr/lib/rabbitmq/bin");
        let program = if scripts.join(program).exists() {
            scripts.join(program)
        } else {
            PathBuf::from(program)
        };
        let mut command = std::process::Command::new(program);
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
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", self.base.join("none-advanced.config"));
        command
    }

    async fn boot(&self) {
        let status = self.command("rabbitmq-server").arg("-detached").status().await.unwrap();
        assert!(status.success(), "rabbitmq-server -detached failed");
        let address = format!("127.0.0.1:{}", self.port);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        while tokio::net::TcpStream::connect(&address).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "private broker did not start");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The listener opens before the node is fully up; wait for the app.
        let status = self
            .command("rabbitmqctl")
            .args(["-n", &self.node, "await_startup", "--timeout", "60"])
            .status()
            .await
            .unwrap();
        assert!(status.success(), "private broker did not finish starting");
    }

    /// Stops the node (every connection drops) and starts it again with its
    /// queues and messages.
    pub async fn restart(&self) {
        let _ = self
            .command("rabbitmqctl")
            .args(["-n", &self.node, "stop"])
            .status()
            .await;
        self.boot().await;
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = self
            .std_command("rabbitmqctl")
            .args(["-n", &self.node, "stop"])
            .status();
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
