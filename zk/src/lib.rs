//! ZooKeeper building blocks for Mezzo's high availability: leader election
//! ([`Contender`]), leader detection ([`Detector`]) and a small versioned key-value store
//! on znodes ([`ZkStore`]) for the registry.
//!
//! This crate knows nothing about masters or agents: a contender publishes opaque bytes
//! (MasterInfo JSON in practice) and every party reads them back.
//!
//! # Election rules (compatible with Apache Mesos)
//!
//! * A cluster is named by a URL `zk://host1:port1,host2:port2/path` ([`ZkUrl`]).
//! * Each contender creates an **ephemeral sequential** znode `<path>/json.info_<seq>`
//!   (10-digit zero-padded sequence, ACL world:anyone) whose data is the bytes it was given.
//!   The parent path is created (persistent) when missing.
//! * The **lowest** `json.info_` sequence leads. Other children of `<path>` (Mesos'
//!   `log_replicas`, legacy `info_` nodes, registry keys) are ignored.
//! * The leader's sequence number is its **epoch**: it is unique over the life of the
//!   parent znode and strictly increases with every new candidacy, so a newer leader always
//!   has a higher epoch than any older one.
//! * Every party watches the children of `<path>` and re-evaluates on every change.
//!
//! # Fencing invariant
//!
//! A contender publishes [`Leadership::Leader`] only while its ZooKeeper connection is up,
//! its session is alive and its own znode is the lowest. The **moment** the connection is
//! lost (Disconnected) or the session expires it publishes [`Leadership::Lost`], without
//! waiting for the session to actually expire: during a disconnect another contender may
//! already be leading. If the same session survives a short disconnect and the node still
//! exists and is still the lowest, it may publish `Leader` again with the **same** epoch.
//! After expiry it connects with a new session, creates a new node (a new, higher epoch) and
//! contends again, forever, with backoff. Consumers must check the current value of the
//! [`tokio::sync::watch::Receiver`] before every side effect and tag side effects with
//! the epoch.
//!
//! A process that was paused (SIGSTOP, long GC) past its session timeout still holds the
//! old `Leader` value for the instant between resuming and its client noticing the closed
//! connection. Two defences cover that window: [`Contender::confirm_leadership`] (a round
//! trip to ZooKeeper before an irreversible action) and the server-side fence below; the
//! receivers of a leader's messages should also accept them only from the leader their
//! [`Detector`] currently shows (by epoch).
//!
//! Note that the first node created under a fresh parent has sequence (epoch) 0.
//!
//! Writes to the registry can additionally be fenced on the server side with
//! [`ZkStore::fenced`]: every write then runs in a ZooKeeper transaction together with a
//! check that the writer's election znode still exists, so a master whose session has
//! expired (and whose node is therefore gone) can never write, even if it has not yet
//! noticed.
//!
//! A [`Detector`] publishes `None` whenever it is not connected to ZooKeeper (no quorum,
//! session lost) or no contender exists; otherwise `Some(LeaderInfo)` of the lowest node.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod contender;
mod detector;
mod error;
mod store;
mod url;
mod util;

#[cfg(feature = "testing")]
pub mod testing;

pub use contender::{Contender, Leadership};
pub use detector::{master_address, Detector, LeaderInfo};
pub use error::{Error, Result};
pub use store::{ZkStore, MAX_VALUE_BYTES};
pub use url::ZkUrl;
pub use util::{election_node_path, parse_election_node, ELECTION_LABEL};
