//! What every simulator is built from: the lock around its state, the
//! randomness behind fault rates and latency jitter, armed faults, latency and
//! the plumbing of the control APIs. The simulators differ in what they
//! answer, not in how they keep state, arm a fault or wait.

pub(crate) mod bulk;
pub(crate) mod control;
pub(crate) mod faults;
pub(crate) mod issued;
pub(crate) mod latency;
pub(crate) mod random;
pub(crate) mod store;

pub(crate) use faults::{Applies, Faults};
pub(crate) use issued::Issued;
pub(crate) use latency::Latency;
pub(crate) use random::Random;
pub(crate) use store::Store;

/// The `new`, `router` and `serve` of an HTTP simulator's handle, a struct
/// with `store: Arc<Store>` whose module has `routes::router(Arc<Store>)` and
/// `control::router(Self)`: a fresh state under `$config`, the API's routes
/// merged with the control API's, served by a [`crate::Server`].
macro_rules! http_handle {
    ($config:ty, $what:literal) => {
        #[doc = concat!("A simulator with no ", $what, " yet.")]
        pub fn new(config: $config) -> Self {
            Self {
                store: std::sync::Arc::new(Store::new(config)),
            }
        }

        /// The simulator's routes (the API and its control API), to serve or
        /// to merge into a larger router.
        pub fn router(&self) -> axum::Router {
            routes::router(self.store.clone()).merge(control::router(self.clone()))
        }

        /// Serves the simulator on `listen` (port 0 picks a free port) until
        /// `shutdown` is cancelled.
        pub async fn serve(
            &self,
            listen: std::net::SocketAddr,
            shutdown: tokio_util::sync::CancellationToken,
        ) -> std::io::Result<crate::Server> {
            crate::Server::start(listen, self.router(), shutdown).await
        }
    };
}

pub(crate) use http_handle;
