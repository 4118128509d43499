//! Serving an axum router (which may carry tonic's gRPC routes) on one
//! listener, the way every Mezzo process does it.

use axum::serve::ListenerExt as _;
use tokio::net::TcpListener;

use crate::Shutdown;

/// Serves `app` on `listener` until `shutdown` trips, then stops accepting
/// and waits for in-flight requests to finish. Every accepted socket gets
/// `TCP_NODELAY`: without it small exchanges (acknowledgements, unary gRPC
/// calls) stall 40 ms on Nagle against the peer's delayed ACK.
///
/// Long-lived streams (gRPC event streams, SSE) must end on their own when
/// `shutdown` trips, or the graceful wait lasts as long as they do.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    axum::serve(
        listener.tap_io(|tcp| {
            // Best effort: a socket that refuses the option still works.
            let _ = tcp.set_nodelay(true);
        }),
        app,
    )
    .with_graceful_shutdown(async move { shutdown.wait().await })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use std::time::Duration;

    #[tokio::test]
    async fn finishes_in_flight_requests_then_returns() -> Result<(), Box<dyn std::error::Error>> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        // The handler says when it started, then waits to be released, so the
        // shutdown provably lands while the request is in flight.
        let (started_tx, started_rx) = tokio::sync::mpsc::channel::<()>(1);
        let release = std::sync::Arc::new(tokio::sync::Notify::new());
        let release_h = release.clone();
        let app = axum::Router::new().route(
            "/slow",
            get(move || {
                let started = started_tx.clone();
                let release = release_h.clone();
                async move {
                    let _ = started.send(()).await;
                    release.notified().await;
                    "done"
                }
            }),
        );
        let shutdown = Shutdown::new();
        let server = tokio::spawn(serve(listener, app, shutdown.clone()));
        let request = tokio::spawn(reqwest::get(format!("http://{addr}/slow")));
        let mut started_rx = started_rx;
        tokio::time::timeout(Duration::from_secs(5), started_rx.recv()).await?;
        shutdown.trigger();
        release.notify_one();
        let body = request.await??.text().await?;
        assert_eq!(body, "done");
        tokio::time::timeout(Duration::from_secs(5), server).await???;
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "a stopped server must not accept"
        );
        Ok(())
    }
}
