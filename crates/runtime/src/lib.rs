//! The runtime side of CNI — what libcni is to Go: load network
//! configurations, negotiate the spec version, run plugin chains for ADD,
//! CHECK, DEL, GC and STATUS, and cache results in libcni's on-disk format so
//! this runtime and `cnitool` (or any libcni-based runtime) can each tear
//! down what the other set up.
//!
//! ```no_run
//! use runtime::{Attachment, Runtime, config_dir};
//! # fn main() -> Result<(), runtime::Error> {
//! let network = config_dir::find("/etc/cni/net.d".as_ref(), "cni-rs")?;
//! let runtime = Runtime::new(vec!["/opt/cni/bin".into()]);
//! let attachment = Attachment::new("c1", "/run/netns/c1", "eth0");
//! let result = runtime.add(&network, &attachment)?;
//! println!("{result}");
//! runtime.del(&network, &attachment)?;
//! # Ok(()) }
//! ```
//!
//! Plugins are plain programs: this crate only execs them, never a shell.

pub mod attachment;
pub mod cache;
mod chain;
pub mod config;
pub mod config_dir;
mod error;
pub mod exec;
pub mod report;
pub mod request;
pub mod version;

pub use attachment::Attachment;
pub use cache::{CachedAttachment, ResultCache};
pub use chain::{CheckOutcome, DEFAULT_TIMEOUT, GcReport, Runtime, StatusOutcome};
pub use config::{NetworkConfigList, PluginConfig};
pub use error::{CniError, Error, PluginError, PluginFailure, Result, Verb};
pub use request::GcAttachment;
