//! Mechanisms every Mezzo process shares, one copy each:
//! * [`fs::write_atomic`]: a durable whole-file replace (temp + fsync +
//!   rename + directory fsync);
//! * [`serve::serve`]: an axum/tonic server on one listener with
//!   `TCP_NODELAY` and graceful shutdown;
//! * [`shutdown`]: a cancellation token tripped by SIGTERM or SIGINT;
//! * [`prom::Exposition`]: Prometheus text built per scrape.
//!
//! Invariant: nothing here knows about Mezzo's domain; it depends on tokio,
//! axum and prometheus only.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod fs;
pub mod prom;
pub mod serve;
pub mod shutdown;

pub use shutdown::Shutdown;
