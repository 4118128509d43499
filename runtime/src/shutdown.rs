//! Graceful shutdown: one [`Shutdown`] token per process, tripped by SIGTERM
//! or SIGINT (or by code), that servers and actors watch to stop accepting,
//! finish what is in flight and flush their stores.

use tokio_util::sync::CancellationToken;

/// A cloneable shutdown signal. Cancelling any clone cancels all.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A token nobody has tripped yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks everything watching this token to stop.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// True once [`trigger`](Self::trigger) ran.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves when the token is tripped.
    pub async fn wait(&self) {
        self.token.cancelled().await
    }

    /// A token tripped with this one, and also on its own (for one part of
    /// a process, e.g. one framework inside `mezzo local`).
    pub fn child(&self) -> Shutdown {
        Shutdown {
            token: self.token.child_token(),
        }
    }

    /// Trips this token on the first SIGTERM or SIGINT, and returns the
    /// name of the signal that did it. Errors only if the signal handlers
    /// cannot be installed.
    pub async fn on_signals(&self) -> std::io::Result<&'static str> {
        let name = wait_for_signal().await?;
        tracing::info!(signal = name, "shutting down");
        self.trigger();
        Ok(name)
    }
}

/// Waits for SIGTERM or SIGINT; returns the signal's name.
pub async fn wait_for_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn child_follows_parent_but_not_the_reverse() {
        let root = Shutdown::new();
        let child = root.child();
        child.trigger();
        assert!(child.is_triggered());
        assert!(!root.is_triggered());
        let other = root.child();
        root.trigger();
        other.wait().await;
        assert!(other.is_triggered());
    }
}
