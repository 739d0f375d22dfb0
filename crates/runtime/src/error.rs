//! The crate's error type. Every error says which file, network or plugin
//! it concerns, so a message printed on its own is enough to act on.

use std::fmt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// The CNI verb a plugin was run with (`CNI_COMMAND`): the protocol's own
/// verb type, shared with the plugin skeleton.
pub use cni::Command as Verb;

/// The error object a plugin prints on stdout when it fails (spec §5).
pub use cni::Error as CniError;

fn display_cni(e: &CniError) -> String {
    let mut text = e.msg.clone();
    if !e.details.is_empty() {
        text.push_str(": ");
        text.push_str(&e.details);
    }
    format!("{text} (code {})", e.code)
}

/// Why one plugin run failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginFailure {
    /// The plugin reported an error in the CNI format.
    #[error("{}", display_cni(.0))]
    Cni(CniError),
    #[error("not found in {}", display_dirs(.dirs))]
    NotFound { dirs: Vec<PathBuf> },
    #[error("invalid plugin type {0:?}")]
    InvalidType(String),
    #[error("exec {path}: {source}")]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("I/O with the plugin process: {0}")]
    Io(std::io::Error),
    #[error("timed out after {} s and was killed", .0.as_secs_f64())]
    Timeout(Duration),
    /// Non-zero exit and nothing on stdout.
    #[error("{0} with no error message on stdout")]
    Exited(ExitStatus),
    /// Non-zero exit and stdout that is not a CNI error object.
    #[error("{status}; stdout is not a CNI error: {stdout:?}")]
    BadErrorOutput { status: ExitStatus, stdout: String },
    /// Success, but stdout is not what the verb must print.
    #[error("invalid output ({reason}): {stdout:?}")]
    BadOutput { reason: String, stdout: String },
}

fn display_dirs(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "an empty CNI_PATH".to_string();
    }
    let list: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    format!("[{}]", list.join(", "))
}

/// One plugin of one network failed one verb.
#[derive(Debug)]
pub struct PluginError {
    pub network: String,
    /// The plugin's `type`.
    pub plugin: String,
    pub verb: Verb,
    pub failure: PluginFailure,
    /// What the plugin wrote on stderr (it is often the only explanation
    /// a crashing plugin gives).
    pub stderr: String,
}

impl PluginError {
    /// The plugin's CNI error code, when it reported one.
    pub fn code(&self) -> Option<u32> {
        match &self.failure {
            PluginFailure::Cni(e) => Some(e.code),
            _ => None,
        }
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "network {:?}: plugin {:?} failed ({}): {}",
            self.network, self.plugin, self.verb, self.failure
        )?;
        let stderr = self.stderr.trim();
        if !stderr.is_empty() {
            write!(f, "; stderr: {stderr:?}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PluginError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.failure)
    }
}

/// Errors of the runtime crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A configuration file (or configuration bytes) that cannot be used.
    #[error("{origin}: {message}")]
    InvalidConfig { origin: String, message: String },
    #[error("no network configuration named {name:?} in {}{}", .dir.display(), display_broken(.broken))]
    NetworkNotFound {
        name: String,
        dir: PathBuf,
        /// Files skipped because they could not be loaded, with the reason.
        broken: Vec<String>,
    },
    /// Runtime arguments (container id, interface name, CNI_ARGS, ...) that
    /// no plugin would accept.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("network {network:?}: {message}")]
    Version { network: String, message: String },
    #[error(
        "network {network:?}: no cached result for container {container_id:?} interface {ifname:?} (it was not added, or was deleted)"
    )]
    NotAdded {
        network: String,
        container_id: String,
        ifname: String,
    },
    #[error("result cache {}: {message}", .path.display())]
    Cache { path: PathBuf, message: String },
    #[error(transparent)]
    Plugin(Box<PluginError>),
    /// GC could not delete an attachment that is no longer valid.
    #[error("delete stale attachment {container_id}/{ifname}: {source}")]
    StaleAttachment {
        container_id: String,
        ifname: String,
        source: Box<Error>,
    },
    /// Best-effort operations (DEL, GC) keep going and report every failure.
    #[error("{}", display_all(.0))]
    Several(Vec<Error>),
}

impl From<PluginError> for Error {
    fn from(e: PluginError) -> Self {
        Error::Plugin(Box::new(e))
    }
}

impl From<Box<PluginError>> for Error {
    fn from(e: Box<PluginError>) -> Self {
        Error::Plugin(e)
    }
}

impl Error {
    /// The first plugin-reported CNI error code inside this error, if any.
    pub fn cni_code(&self) -> Option<u32> {
        match self {
            Error::Plugin(p) => p.code(),
            Error::Several(all) => all.iter().find_map(Error::cni_code),
            Error::StaleAttachment { source, .. } => source.cni_code(),
            _ => None,
        }
    }

    /// Collapse a list of failures: none → Ok, one → itself, more → Several.
    pub fn from_list(mut errors: Vec<Error>) -> Result<()> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Error::Several(errors)),
        }
    }
}

fn display_broken(broken: &[String]) -> String {
    if broken.is_empty() {
        String::new()
    } else {
        format!(" (skipped unreadable files: {})", broken.join("; "))
    }
}

fn display_all(errors: &[Error]) -> String {
    let all: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    all.join("; ")
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_error_names_network_plugin_message_and_code() {
        let e = PluginError {
            network: "net1".into(),
            plugin: "bridge".into(),
            verb: Verb::Add,
            failure: PluginFailure::Cni(CniError::new(7, "bad config").with_details("mtu")),
            stderr: "oops\n".into(),
        };
        assert_eq!(
            e.to_string(),
            r#"network "net1": plugin "bridge" failed (ADD): bad config: mtu (code 7); stderr: "oops""#
        );
        assert_eq!(Error::from(e).cni_code(), Some(7));
    }
}
