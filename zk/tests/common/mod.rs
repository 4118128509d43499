//! The shared ZooKeeper test server (`mezzo_zk::testing`).

pub use mezzo_zk::testing::ZkServer;
