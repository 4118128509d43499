//! A private ZooKeeper server for end-to-end tests (see `mezzo_zk::testing`).

pub use mezzo_zk::testing::ZkServer;
