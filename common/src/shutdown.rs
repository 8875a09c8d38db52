//! The shutdown signal every service listens to.

use tokio_util::sync::CancellationToken;

/// A token cancelled on SIGTERM or SIGINT. Services take the token, so tests
/// can stop them without signals.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("Shutdown signal received.");
        cancel.cancel();
    });
    token
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut terminate), Ok(mut interrupt)) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        }
        _ => {
            // Without signal handlers the process can still be stopped by
            // the platform; never treat this as a shutdown request.
            tracing::error!("Could not install signal handlers.");
            std::future::pending::<()>().await;
        }
    }
}
