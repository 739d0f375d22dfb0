//! CNI error results (spec §"Error"): a code, a message and optional details,
//! printed as JSON on stdout with a non-zero exit status.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Well-known error codes from the CNI specification.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODING_FAILURE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Invalid network namespace.
    pub const INVALID_NETNS: u32 = 8;
    /// Try again later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin is not available (cannot service ADD).
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: not available, and existing containers may be degraded.
    pub const NOT_AVAILABLE_DEGRADED: u32 = 51;
    /// Internal error with no better code.
    pub const INTERNAL: u32 = 999;
    /// First code free for plugin-specific errors.
    pub const PLUGIN_SPECIFIC: u32 = 100;
}

/// A CNI error result. `Display` shows the message, then the details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Error {
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Error {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// Code 7: the network configuration is invalid.
    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_CONFIG, msg)
    }

    /// Code 4: an environment variable is missing or invalid.
    pub fn invalid_env(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_ENV, msg)
    }

    /// Code 6: something could not be decoded.
    pub fn decoding(msg: impl Into<String>) -> Self {
        Self::new(code::DECODING_FAILURE, msg)
    }

    /// Code 5: an I/O operation failed.
    pub fn io(msg: impl Into<String>) -> Self {
        Self::new(code::IO_FAILURE, msg)
    }

    /// Code 11: a transient condition; the runtime may retry.
    pub fn try_again(msg: impl Into<String>) -> Self {
        Self::new(code::TRY_AGAIN_LATER, msg)
    }

    /// Code 999: an internal failure with no more specific code.
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(code::INTERNAL, msg)
    }

    /// Prefix the message with context, keeping code and details.
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.msg = format!("{ctx}: {}", self.msg);
        self
    }

    /// The error as the JSON object a runtime reads on stdout.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let mut v = serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = serde_json::Value::String(self.details.clone());
        }
        v
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.details.is_empty() {
            write!(f, "{}", self.msg)
        } else {
            write!(f, "{}; {}", self.msg, self.details)
        }
    }
}

impl std::error::Error for Error {}

/// Attach context to a fallible operation, turning any error into a CNI
/// error of the given code: `fs::read(p).cni(code::IO_FAILURE, "read p")?`.
pub trait ResultExt<T> {
    fn cni(self, code: u32, ctx: impl fmt::Display) -> Result<T>;
}

impl<T, E: fmt::Display> ResultExt<T> for std::result::Result<T, E> {
    fn cni(self, code: u32, ctx: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::new(code, format!("{ctx}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_version_code_msg_and_details_only_when_set() {
        let e = Error::invalid_env("bad").with_details("x");
        let j = e.to_json("1.0.0");
        assert_eq!(j["cniVersion"], "1.0.0");
        assert_eq!(j["code"], 4);
        assert_eq!(j["msg"], "bad");
        assert_eq!(j["details"], "x");
        let j = Error::internal("boom").to_json("1.1.0");
        assert!(j.get("details").is_none());
    }

    #[test]
    fn context_prefixes_message() {
        let e = Error::io("denied").context("open /x");
        assert_eq!(e.msg, "open /x: denied");
        assert_eq!(e.code, code::IO_FAILURE);
        let r: std::result::Result<(), &str> = Err("nope");
        assert_eq!(r.cni(7, "parse").unwrap_err().msg, "parse: nope");
    }
}
