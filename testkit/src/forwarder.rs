//! A TCP forwarder a test puts between a service and one of the shared
//! services (PostgreSQL, RabbitMQ), to make that dependency unreachable and
//! reachable again without stopping what the other tests use. Closed, the
//! port refuses connections (nothing listens) and every forwarded connection
//! is cut; open, each connection is forwarded to the target.

use std::{net::SocketAddr, sync::Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A forwarder from a port of its own on the loopback to `target`.
pub struct Forwarder {
    /// The port services connect to.
    pub port: u16,
    target: SocketAddr,
    open: Mutex<Option<CancellationToken>>,
}

impl Forwarder {
    /// A forwarder to `target`, closed: its port refuses connections.
    pub fn closed(target: SocketAddr) -> Self {
        Self {
            port: crate::free_port(),
            target,
            open: Mutex::new(None),
        }
    }

    /// A closed forwarder to the host and port of `url` (a PostgreSQL or
    /// AMQP URL on this machine).
    pub fn to_url(url: &str) -> Self {
        let authority = url.split_once("://").unwrap().1;
        let authority = authority.split('/').next().unwrap();
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, host_port)| host_port);
        let target = std::net::ToSocketAddrs::to_socket_addrs(host_port)
            .unwrap()
            .find(SocketAddr::is_ipv4)
            .unwrap();
        Self::closed(target)
    }

    /// Listens on the port and forwards every connection to the target.
    pub async fn open(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        let stop = CancellationToken::new();
        if let Some(previous) = self.open.lock().unwrap().replace(stop.clone()) {
            previous.cancel();
        }
        let target = self.target;
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut inbound, _)) = accepted else { continue };
                let stop = stop.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
    }

    /// Stops listening and cuts every forwarded connection.
    pub fn close(&self) {
        if let Some(stop) = self.open.lock().unwrap().take() {
            stop.cancel();
        }
    }

    /// `url` (of the target) with its host and port replaced by this
    /// forwarder's.
    pub fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap();
        let (authority, path) = rest
            .split_once('/')
            .map_or((rest, ""), |(authority, path)| (authority, path));
        let credentials = authority
            .rsplit_once('@')
            .map(|(credentials, _)| format!("{credentials}@"));
        format!(
            "{scheme}://{}127.0.0.1:{}/{path}",
            credentials.unwrap_or_default(),
            self.port
        )
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.close();
    }
}
