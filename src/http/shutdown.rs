//! Graceful shutdown: what happens between SIGTERM (or the trigger a test fires) and the
//! process's exit, so that a rolling restart loses no request, no booking and no subscriber.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{router_with, ws};
use crate::app::AppState;

/// Serves until `shutdown` resolves, then drains: `/readyz` answers 503 at once while new
/// requests are still served for `shutdown_drain` (the load balancer needs a few probes to
/// notice), then the listener closes, requests in flight finish (bookings queued for a batch
/// included: their callers are those requests), event streams end and every WebSocket closes
/// with 1012 once its operations in flight are done. All of it within `shutdown_grace` of the
/// signal; what is still running then is abandoned, and its open transactions roll back.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let sockets = Arc::new(ws::Sockets::new(app.config.websocket));
    let draining = CancellationToken::new();
    let (drain, grace) = (app.config.shutdown_drain, app.config.shutdown_grace);
    let router = router_with(app, sockets.clone(), draining.clone());
    let (signalled, drain_started) = (sockets.clone(), draining.clone());
    // The peer address is the client's identity for rate limits (see `security::client`).
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        drain_started.cancel();
        tracing::info!(drain_ms = drain.as_millis() as u64, "draining");
        // Even a zero sleep waits for the timer's next tick, and the sockets would go on
        // taking new operations meanwhile.
        if !drain.is_zero() {
            tokio::time::sleep(drain).await;
        }
        tracing::info!("no longer accepting connections");
        // Upgraded connections are not HTTP requests any more: tell them separately.
        signalled.begin_shutdown();
    });
    let stopped = async {
        server.await?;
        sockets.shut_down().await;
        Ok(())
    };
    let grace_over = async {
        draining.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = stopped => result,
        () = grace_over => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "shutdown grace over with work in flight");
            Ok(())
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
