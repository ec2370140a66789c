//! The sipvip test harness: frames, checksums, namespaces, the fixture topology and the
//! plain-Rust reference model of the datapath.
pub mod bench;
pub mod check;
pub mod cluster;
pub mod ecmp;
pub mod failover_bench;
pub mod fixtures;
pub mod frame;
pub mod gateways;
pub mod image;
pub mod lab;
pub mod model;
pub mod netns;
pub mod pair;
pub mod pktgen;
pub mod scenario;
pub mod table;
pub mod topo;
