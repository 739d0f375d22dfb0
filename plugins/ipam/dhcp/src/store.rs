//! Leases on disk: one JSON file per client id under the state directory,
//! named by the SHA-256 of the client id (client ids hold `/` and may be
//! 254 bytes long). Writes go to a temporary file that is synced and
//! renamed over the old one, so a crash leaves either lease, never half.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::lease::Lease;

pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    fn file(&self, client_id: &str) -> PathBuf {
        let digest = Sha256::digest(client_id.as_bytes());
        let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}.json"))
    }

    pub fn save(&self, lease: &Lease) -> io::Result<()> {
        let path = self.file(&lease.attachment.client_id);
        let tmp = path.with_extension("tmp");
        let data = serde_json::to_vec_pretty(lease).map_err(io::Error::other)?;
        {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        fs::File::open(&self.dir)?.sync_all()
    }

    pub fn remove(&self, client_id: &str) -> io::Result<()> {
        match fs::remove_file(self.file(client_id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every readable lease; unreadable files are reported and skipped.
    pub fn load_all(&self) -> (Vec<Lease>, Vec<String>) {
        let mut leases = Vec::new();
        let mut errors = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => return (leases, vec![format!("{}: {e}", self.dir.display())]),
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|d| serde_json::from_slice::<Lease>(&d).map_err(|e| e.to_string()))
            {
                Ok(l) => leases.push(l),
                Err(e) => errors.push(format!("{}: {e}", path.display())),
            }
        }
        (leases, errors)
    }
}
