//! What GC needs and the rules do not say: which addresses belong to which
//! attachment. The reference's per-address rules carry no owner, so ADD
//! records `<dataDir>/<network>/<container id>-<ifname>` (the addresses,
//! one a line) and DEL removes it; GC removes the rules of every record
//! whose attachment is not valid any more.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub struct Records {
    dir: PathBuf,
}

/// One recorded attachment.
pub struct Record {
    pub container_id: String,
    pub ifname: String,
    pub addresses: Vec<IpAddr>,
    path: PathBuf,
}

impl Records {
    /// Records of `network` under `data_dir` (both already validated:
    /// absolute path, CNI network name).
    pub fn new(data_dir: &str, network: &str) -> Records {
        Records {
            dir: Path::new(data_dir).join(network),
        }
    }

    fn path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.dir.join(format!("{container_id}-{ifname}"))
    }

    /// Write atomically (temporary file, then rename).
    pub fn save(&self, container_id: &str, ifname: &str, addrs: &[IpAddr]) -> std::io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let path = self.path(container_id, ifname);
        let tmp = self.dir.join(format!(".{container_id}-{ifname}.tmp"));
        let mut f = fs::File::create(&tmp)?;
        writeln!(f, "{container_id}")?;
        writeln!(f, "{ifname}")?;
        for a in addrs {
            writeln!(f, "{a}")?;
        }
        f.sync_all()?;
        fs::rename(&tmp, &path)
    }

    pub fn load(&self, container_id: &str, ifname: &str) -> Option<Record> {
        read(&self.path(container_id, ifname))
    }

    pub fn all(&self) -> Vec<Record> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return vec![];
        };
        entries
            .filter_map(|e| e.ok())
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| read(&e.path()))
            .collect()
    }

    pub fn remove(&self, record: &Record) -> std::io::Result<()> {
        remove_file(&record.path)
    }

    /// Remove the attachment's record and a temporary file an ADD killed
    /// mid-write may have left.
    pub fn remove_attachment(&self, container_id: &str, ifname: &str) -> std::io::Result<()> {
        remove_file(&self.dir.join(format!(".{container_id}-{ifname}.tmp")))?;
        remove_file(&self.path(container_id, ifname))
    }
}

fn remove_file(path: &Path) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A record file: container id, ifname, then addresses (the names are in
/// the file because `-` may appear in both).
fn read(path: &Path) -> Option<Record> {
    let text = fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let container_id = lines.next()?.to_string();
    let ifname = lines.next()?.to_string();
    let addresses = lines.filter_map(|l| l.trim().parse().ok()).collect();
    Some(Record {
        container_id,
        ifname,
        addresses,
        path: path.to_path_buf(),
    })
}
