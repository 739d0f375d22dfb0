//! The result cache, in libcni's layout and format so that `cnitool` and
//! this runtime can each tear down what the other set up:
//! `<cache dir>/results/<network>-<container id>-<ifname>`, a JSON object of
//! kind `cniCacheV1` holding the final ADD result plus what the ADD was
//! called with (configuration, netns, CNI_ARGS, capability arguments).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::{GeneralPurpose, GeneralPurposeConfig};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::attachment::Attachment;
use crate::error::{Error, Result};

/// Where libcni keeps its cache unless told otherwise.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/cni";

const KIND_V1: &str = "cniCacheV1";

/// Go's `encoding/json` writes a `[]byte` in standard base64 with padding,
/// and Go's decoder does not insist on zero bits after the last character.
const GO_BYTES: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// The on-disk object. Field names, order and omissions follow libcni's
/// `cachedInfo` as Go's encoding/json writes it.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    #[serde(default)]
    kind: String,
    #[serde(rename = "containerId", default)]
    container_id: String,
    /// Go `[]byte`: base64 text, or null when absent.
    #[serde(default)]
    config: Option<String>,
    #[serde(rename = "ifName", default)]
    ifname: String,
    #[serde(rename = "networkName", default)]
    network_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    netns: String,
    #[serde(
        rename = "cniArgs",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    cni_args: Vec<(String, String)>,
    #[serde(
        rename = "capabilityArgs",
        default,
        skip_serializing_if = "Map::is_empty",
        deserialize_with = "null_as_default"
    )]
    capability_args: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<Value>,
}

fn null_as_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// One cached attachment: the ADD's arguments and its final result.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedAttachment {
    pub network: String,
    pub attachment: Attachment,
    /// The network configuration the ADD ran with, as loaded.
    pub config: Vec<u8>,
    /// The final result of the ADD; absent in entries written without one.
    pub result: Option<Value>,
}

/// The cache directory (the parent of `results/`).
#[derive(Debug, Clone)]
pub struct ResultCache {
    dir: PathBuf,
}

impl Default for ResultCache {
    fn default() -> Self {
        Self::new(DEFAULT_CACHE_DIR)
    }
}

impl ResultCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ResultCache { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn results_dir(&self) -> PathBuf {
        self.dir.join("results")
    }

    /// The file for one attachment. All three parts must be non-empty, and
    /// none may contain `/` (the name becomes a single path component).
    pub fn path_for(&self, network: &str, container_id: &str, ifname: &str) -> Result<PathBuf> {
        let parts = [network, container_id, ifname];
        if parts.iter().any(|p| p.is_empty() || p.contains('/')) {
            return Err(Error::InvalidArgument(format!(
                "cache file name needs a network name ({network:?}), container id ({container_id:?}) and interface name ({ifname:?}) without '/'"
            )));
        }
        Ok(self
            .results_dir()
            .join(format!("{network}-{container_id}-{ifname}")))
    }

    /// Record a successful ADD. The file is written under a temporary name
    /// and renamed, so a concurrent reader never sees half of it.
    pub fn save(
        &self,
        network: &str,
        attachment: &Attachment,
        config: &[u8],
        result: &Value,
    ) -> Result<()> {
        let path = self.path_for(network, &attachment.container_id, &attachment.ifname)?;
        let entry = Entry {
            kind: KIND_V1.to_string(),
            container_id: attachment.container_id.clone(),
            config: Some(GO_BYTES.encode(config)),
            ifname: attachment.ifname.clone(),
            network_name: network.to_string(),
            netns: attachment.netns.clone(),
            cni_args: attachment.args.clone(),
            capability_args: attachment.capability_args.clone(),
            result: Some(result.clone()),
        };
        let bytes = serde_json::to_vec(&entry).map_err(|e| Error::Cache {
            path: path.clone(),
            message: format!("encode: {e}"),
        })?;
        let io_err = |what: &str| {
            let path = path.clone();
            let what = what.to_string();
            move |e: std::io::Error| Error::Cache {
                path,
                message: format!("{what}: {e}"),
            }
        };
        let results = self.results_dir();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&results)
            .map_err(io_err("create directory"))?;
        let mut tmp = tempfile_in(&results).map_err(io_err("create temporary file"))?;
        tmp.file.write_all(&bytes).map_err(io_err("write"))?;
        tmp.file.sync_data().map_err(io_err("sync"))?;
        std::fs::rename(&tmp.path, &path).map_err(io_err("rename into place"))?;
        tmp.path = PathBuf::new();
        Ok(())
    }

    /// The cached attachment, or `None` if there is no cache file.
    pub fn load(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<CachedAttachment>> {
        let path = self.path_for(network, container_id, ifname)?;
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::Cache {
                    path,
                    message: format!("read: {e}"),
                });
            }
        };
        let bad = |message: String| Error::Cache {
            path: path.clone(),
            message,
        };
        match serde_json::from_slice::<Entry>(&bytes) {
            Ok(entry) if entry.kind == KIND_V1 => entry_to_attachment(entry).map(Some).map_err(bad),
            // Before cniCacheV1, libcni stored the bare result.
            _ => {
                let result: Value = serde_json::from_slice(&bytes)
                    .map_err(|e| bad(format!("neither a cache entry nor a result: {e}")))?;
                Ok(Some(CachedAttachment {
                    network: network.to_string(),
                    attachment: Attachment::new(container_id, "", ifname),
                    config: Vec::new(),
                    result: Some(result),
                }))
            }
        }
    }

    /// Forget an attachment; a missing file is not an error.
    pub fn remove(&self, network: &str, container_id: &str, ifname: &str) -> Result<()> {
        let path = self.path_for(network, container_id, ifname)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Cache {
                path,
                message: format!("remove: {e}"),
            }),
        }
    }

    /// Every readable `cniCacheV1` entry, in file-name order. Files that are
    /// not such entries (legacy results, foreign files) are skipped, as
    /// libcni skips them.
    pub fn list(&self) -> Result<Vec<CachedAttachment>> {
        let results = self.results_dir();
        let entries = match std::fs::read_dir(&results) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(Error::Cache {
                    path: results,
                    message: format!("read directory: {e}"),
                });
            }
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
        paths.sort();
        let mut found = Vec::new();
        for path in paths {
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let Ok(entry) = serde_json::from_slice::<Entry>(&bytes) else {
                continue;
            };
            if entry.kind != KIND_V1 || entry.ifname.is_empty() || entry.network_name.is_empty() {
                continue;
            }
            if let Ok(attachment) = entry_to_attachment(entry) {
                found.push(attachment);
            }
        }
        Ok(found)
    }
}

fn entry_to_attachment(entry: Entry) -> std::result::Result<CachedAttachment, String> {
    let config = match entry.config.as_deref() {
        None => Vec::new(),
        Some(text) => GO_BYTES
            .decode(text)
            .map_err(|_| "'config' is not base64")?,
    };
    Ok(CachedAttachment {
        network: entry.network_name,
        attachment: Attachment {
            container_id: entry.container_id,
            netns: entry.netns,
            ifname: entry.ifname,
            args: entry.cni_args,
            capability_args: entry.capability_args,
        },
        config,
        result: entry.result,
    })
}

/// A uniquely named 0600 file removed on drop unless renamed away.
struct TempFile {
    file: std::fs::File,
    path: PathBuf,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn tempfile_in(dir: &Path) -> std::io::Result<TempFile> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    loop {
        // The leading dot keeps the file out of anyone's results listing:
        // its name has no '-'-separated network/container/ifname shape.
        let path = dir.join(format!(
            ".tmp.{}.{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => return Ok(TempFile { file, path }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Attachment {
        let mut a = Attachment::new("cid1", "/run/netns/x", "eth0");
        a.args = vec![("IgnoreUnknown".into(), "1".into())];
        a.capability_args
            .insert("portMappings".into(), json!([{"hostPort": 8080}]));
        a
    }

    #[test]
    fn config_bytes_are_go_base64() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(GO_BYTES.encode(plain), coded);
            assert_eq!(GO_BYTES.decode(coded).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(GO_BYTES.decode(GO_BYTES.encode(&all)).unwrap(), all);
        for bad in ["Zm9", "Zm=v", "Zg==Zg==", "Z!=="] {
            assert!(GO_BYTES.decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn save_load_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResultCache::new(dir.path());
        let result = json!({"cniVersion": "1.0.0", "ips": []});
        cache
            .save("net", &sample(), b"{\"name\":\"net\"}", &result)
            .unwrap();

        let file = dir.path().join("results/net-cid1-eth0");
        let on_disk: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(on_disk["kind"], "cniCacheV1");
        assert_eq!(on_disk["containerId"], "cid1");
        assert_eq!(on_disk["config"], "eyJuYW1lIjoibmV0In0=");
        assert_eq!(on_disk["cniArgs"], json!([["IgnoreUnknown", "1"]]));
        assert_eq!(on_disk["result"], result);

        let loaded = cache.load("net", "cid1", "eth0").unwrap().unwrap();
        assert_eq!(loaded.attachment, sample());
        assert_eq!(loaded.config, b"{\"name\":\"net\"}");
        assert_eq!(cache.list().unwrap(), vec![loaded]);

        cache.remove("net", "cid1", "eth0").unwrap();
        cache.remove("net", "cid1", "eth0").unwrap();
        assert!(cache.load("net", "cid1", "eth0").unwrap().is_none());
        assert!(cache.list().unwrap().is_empty());
    }

    #[test]
    fn reads_entries_written_by_libcni() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("results")).unwrap();
        // As written by cnitool 1.1.2 (no netns/args keys when empty, Go's null config).
        std::fs::write(
            dir.path().join("results/n-cnitool-abc-eth0"),
            r#"{"kind":"cniCacheV1","containerId":"cnitool-abc","config":null,"ifName":"eth0","networkName":"n","result":{"cniVersion":"1.0.0"}}"#,
        )
        .unwrap();
        // Legacy: the bare result.
        std::fs::write(
            dir.path().join("results/n-old-eth1"),
            r#"{"cniVersion":"0.3.1","ips":[]}"#,
        )
        .unwrap();
        let cache = ResultCache::new(dir.path());
        let entry = cache.load("n", "cnitool-abc", "eth0").unwrap().unwrap();
        assert_eq!(entry.attachment.container_id, "cnitool-abc");
        assert!(entry.config.is_empty());
        let legacy = cache.load("n", "old", "eth1").unwrap().unwrap();
        assert_eq!(legacy.result.unwrap()["cniVersion"], "0.3.1");
        // list() only reports cniCacheV1 entries, like libcni.
        assert_eq!(cache.list().unwrap().len(), 1);
    }

    #[test]
    fn rejects_path_separators() {
        let cache = ResultCache::new("/tmp/x");
        assert!(cache.path_for("a/b", "c", "d").is_err());
        assert!(cache.path_for("a", "", "d").is_err());
    }
}
