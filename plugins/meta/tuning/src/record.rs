//! What ADD changed, kept to undo it on DEL: one JSON file per attachment,
//! `<dataDir>/<containerID>_<ifname>.json`, in the reference's format
//! (`mac`, `promisc`, `mtu`, `allmulti`, `txQLen`: the values *before* ADD)
//! plus, ours only, `sysctl`: the previous value of each sysctl written,
//! by `/proc/sys` path. The Go plugin ignores the extra key, so either
//! plugin's DEL can undo the other's ADD (the Go one leaves sysctls).
//!
//! Unlike the reference, the record is written (atomically, by rename)
//! *before* anything is changed, so an ADD killed halfway is still undone
//! by DEL; and a second ADD for the same attachment keeps the first
//! record's values, which are the originals.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promisc: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allmulti: Option<bool>,
    #[serde(rename = "txQLen", default, skip_serializing_if = "Option::is_none")]
    pub txqlen: Option<u32>,
    /// `/proc/sys` path (`net/...`) → previous value, in the order written.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub sysctl: Map<String, Value>,
}

impl Record {
    /// Fill what `self` lacks from `older` (an earlier ADD's record, whose
    /// values are the originals and win).
    pub fn keep_older(mut self, older: Record) -> Record {
        let mut r = older;
        r.mac = r.mac.or(self.mac.take());
        r.promisc = r.promisc.or(self.promisc);
        r.mtu = r.mtu.or(self.mtu);
        r.allmulti = r.allmulti.or(self.allmulti);
        r.txqlen = r.txqlen.or(self.txqlen);
        for (k, v) in self.sysctl {
            r.sysctl.entry(k).or_insert(v);
        }
        r
    }
}

/// The record's file name: the reference's.
pub fn file_name(container_id: &str, ifname: &str) -> String {
    format!("{container_id}_{ifname}.json")
}

pub fn path(dir: &Path, container_id: &str, ifname: &str) -> PathBuf {
    dir.join(file_name(container_id, ifname))
}

/// The record at `path`, `None` when there is none. A file that is not
/// valid JSON is treated as absent (the reference's rule), so a torn file
/// cannot wedge DEL.
pub fn load(path: &Path) -> std::io::Result<Option<Record>> {
    match std::fs::read(path) {
        Ok(data) => Ok(serde_json::from_slice(&data).ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Write the record atomically: a temporary file beside it, synced, then
/// renamed over it.
pub fn store(path: &Path, rec: &Record) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let data = serde_json::to_vec_pretty(rec).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode_0600()
            .open(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

/// Remove the record (and a leftover temporary); absent is fine.
pub fn remove(path: &Path) -> std::io::Result<()> {
    for p in [path.to_path_buf(), path.with_extension("json.tmp")] {
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Remove every record in `dir` whose attachment is not in `keep` (file
/// names as [`file_name`] makes them). Returns the names removed.
pub fn gc(dir: &Path, keep: &[String]) -> std::io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let mut removed = vec![];
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let base = name.strip_suffix(".tmp").unwrap_or(&name);
        if !base.ends_with(".json") || keep.iter().any(|k| k == base) {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => removed.push(name),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_reference_format() {
        let text = br#"{
 "mac": "0a:58:0a:00:00:05",
 "promisc": false,
 "mtu": 1500,
 "allmulti": false,
 "txQLen": 1000
}"#;
        let r: Record = serde_json::from_slice(text).unwrap();
        assert_eq!(r.mac.as_deref(), Some("0a:58:0a:00:00:05"));
        assert_eq!(
            (r.promisc, r.mtu, r.allmulti, r.txqlen),
            (Some(false), Some(1500), Some(false), Some(1000))
        );
        assert!(r.sysctl.is_empty());
    }

    #[test]
    fn older_values_win() {
        let mut old = Record {
            mtu: Some(1500),
            ..Default::default()
        };
        old.sysctl.insert("net/a".into(), "1".into());
        let mut new = Record {
            mtu: Some(1400),
            promisc: Some(true),
            ..Default::default()
        };
        new.sysctl.insert("net/a".into(), "2".into());
        new.sysctl.insert("net/b".into(), "3".into());
        let r = new.keep_older(old);
        assert_eq!(r.mtu, Some(1500));
        assert_eq!(r.promisc, Some(true));
        assert_eq!(r.sysctl["net/a"], "1");
        assert_eq!(r.sysctl["net/b"], "3");
    }

    #[test]
    fn store_load_remove_gc() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("sub");
        let p1 = path(&dir, "c1", "eth0");
        let p2 = path(&dir, "c_2", "net1");
        let rec = Record {
            mtu: Some(9000),
            ..Default::default()
        };
        store(&p1, &rec).unwrap();
        store(&p2, &rec).unwrap();
        std::fs::write(dir.join("c3_eth0.json.tmp"), b"{").unwrap();
        std::fs::write(dir.join("other.txt"), b"x").unwrap();
        assert_eq!(load(&p1).unwrap(), Some(rec));
        let mut removed = gc(&dir, &[file_name("c_2", "net1")]).unwrap();
        removed.sort();
        assert_eq!(removed, ["c1_eth0.json", "c3_eth0.json.tmp"]);
        assert!(p2.exists() && dir.join("other.txt").exists());
        remove(&p2).unwrap();
        remove(&p2).unwrap();
        assert_eq!(load(&p2).unwrap(), None);
        std::fs::write(&p2, b"not json").unwrap();
        assert_eq!(load(&p2).unwrap(), None);
    }
}
