//! The plugin ↔ daemon protocol: one JSON request per connection, one JSON
//! reply, each followed by the writer shutting down its side.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use cni::{Attachment, Error};
use serde::{Deserialize, Serialize};

use crate::config::LeaseOptions;
use crate::lease::Binding;

/// Largest message either side accepts.
const MAX_MESSAGE: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verb {
    Add,
    Del,
    Check,
    Gc,
    Status,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub verb: Verb,
    #[serde(default)]
    pub container_id: String,
    #[serde(default)]
    pub network: String,
    #[serde(default)]
    pub ifname: String,
    /// Absolute path of the container's namespace, as the runtime gave it.
    #[serde(default)]
    pub netns: String,
    #[serde(default)]
    pub options: LeaseOptions,
    /// GC: the attachments to keep on `network`.
    #[serde(default)]
    pub keep: Vec<Attachment>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    Ok(Option<Binding>),
    Error(Error),
}

pub fn write_message<T: Serialize>(stream: &mut UnixStream, msg: &T) -> std::io::Result<()> {
    let data = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    stream.write_all(&data)?;
    stream.shutdown(std::net::Shutdown::Write)
}

pub fn read_message<T: for<'de> Deserialize<'de>>(stream: &mut UnixStream) -> std::io::Result<T> {
    let mut data = Vec::new();
    stream.take(MAX_MESSAGE).read_to_end(&mut data)?;
    serde_json::from_slice(&data)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
