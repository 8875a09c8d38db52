//! Simulators of the outside services the fleet talks to, faithful to
//! `shared/reference/providers.md`: a test serves one on `127.0.0.1:0`, shapes
//! its state through the simulator's handle and stops it with a
//! [`CancellationToken`]; the `syncfleet-simulators` binary serves them on a
//! configured address. What they all share (state, faults, latency, control
//! API plumbing) is in `shared`.

pub mod config;
pub mod ews;
pub mod gmail;
pub mod graph;
pub mod salesforce;
mod shared;
pub mod smtp;

pub use shared::bulk::BulkError;

use std::{
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr},
};

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// A free port on loopback: where `start_local` serves a simulator for a test.
const LOOPBACK: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// A simulator being served.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    task: JoinHandle<io::Result<()>>,
}

impl Server {
    /// Binds `listen` and serves `router` until `shutdown` is cancelled.
    pub async fn start(listen: SocketAddr, router: axum::Router, shutdown: CancellationToken) -> io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        });
        Ok(Self { addr, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://{addr}`, the base of every URL it serves.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until the server has stopped (after its shutdown token is cancelled).
    pub async fn stopped(self) -> io::Result<()> {
        self.task.await.map_err(io::Error::other)?
    }
}
