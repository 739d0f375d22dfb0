//! The `dhcp` IPAM plugin and its daemon, in one binary: the plugin is a
//! thin client that asks `dhcp daemon` over a root-only unix socket; the
//! daemon runs the DHCP exchange inside the container's namespace, keeps
//! each lease renewed until DEL, and writes every lease to its state
//! directory so that a restarted daemon picks them up again.

pub mod config;
pub mod daemon;
pub mod exchange;
pub mod flags;
pub mod lease;
pub mod packet;
pub mod plugin;
pub mod protocol;
pub mod store;
