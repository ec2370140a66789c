//! sipvip: a Linux/XDP replacement for a BIG-IP LTM in front of a hot-standby SIP server pair.
//!
//! - [`datapath`]: load, attach and program the kernel datapath.
pub mod api;
pub mod bgp;
pub mod bigip;
pub mod config;
pub mod datapath;
pub mod failover;
pub mod garp;
pub mod keepalived;
pub mod monitor;
pub mod netif;
pub mod ownership;
pub mod plan;
pub mod proto;
pub mod resolve;
pub mod sync;
pub mod trace;
