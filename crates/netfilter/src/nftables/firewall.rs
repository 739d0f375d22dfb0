//! The firewall plugin's rules in a table of our own (not yet written).

use crate::error::{Error, Result};
use crate::firewall::Firewall;

fn unsupported() -> Error {
    Error::Invalid {
        what: "backend",
        value: "nftables".into(),
        reason: "the nftables firewall backend is not available in this build",
    }
}

pub fn add(_fw: &Firewall<'_>) -> Result<()> {
    Err(unsupported())
}

pub fn check(_fw: &Firewall<'_>) -> Result<()> {
    Err(unsupported())
}

pub fn del(_fw: &Firewall<'_>) -> Result<()> {
    Err(unsupported())
}

pub fn status() -> Result<()> {
    Err(unsupported())
}
