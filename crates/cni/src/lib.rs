//! The CNI protocol, as plugins and runtimes speak it — and nothing else:
//! no kernel networking; the one thing it does to the system is run a plugin
//! binary ([`exec`]).
//!
//! - [`config`]: the network configuration a runtime sends one plugin
//!   (unknown keys preserved), and the `.conflist` type;
//! - [`result`]: results in the current format, with conversion to and
//!   from 0.4.0, 0.3.x and 0.1.0/0.2.0;
//! - [`error`]: CNI error results and the spec's codes;
//! - [`version`]: the versions we speak (0.1.0 … 1.1.0);
//! - [`env`], [`args`]: the `CNI_*` environment and `CNI_ARGS`;
//! - [`skel`]: the [`Plugin`] trait and the dispatcher every plugin's
//!   `main` calls;
//! - [`exec`]: finding a plugin in `CNI_PATH` and running it (used by
//!   delegation and by the runtime crate alike);
//! - [`delegate`]: running the IPAM plugin from `CNI_PATH`;
//! - [`rollback`]: undoing a failed ADD's steps.

pub mod args;
pub mod config;
pub mod delegate;
pub mod env;
pub mod error;
pub mod exec;
pub mod result;
pub mod rollback;
pub mod skel;
pub mod version;

pub use args::CniArgs;
pub use config::{Attachment, NetConf, NetConfList, PortMapping, RuntimeConfig};
pub use env::Command;
pub use error::{Error, Result, ResultExt, code};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use rollback::Rollback;
pub use skel::{Plugin, Request, dispatch, run};
