//! A directory of network configurations (`/etc/cni/net.d`): `.conflist`
//! files first, then single-plugin `.conf`/`.json` files, each group in
//! lexical order — the order libcni searches them, so both runtimes pick the
//! same file when two declare the same network name.

use std::path::{Path, PathBuf};

use crate::config::NetworkConfigList;
use crate::error::{Error, Result};

/// Every file in `dir` whose extension is one of `extensions`, sorted by
/// name. A directory that does not exist holds no files.
pub fn files_with_extensions(dir: &Path, extensions: &[&str]) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Read {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        // Follows symlinks: a link to a file counts as a file.
        if path.is_dir() {
            continue;
        }
        let matches = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| extensions.contains(&e));
        if matches {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// One file of the directory and what loading it gave.
#[derive(Debug)]
pub struct LoadedFile {
    pub path: PathBuf,
    pub network: Result<NetworkConfigList>,
}

/// Load every configuration file of `dir`, in search order. Files that fail
/// to load are returned with their error rather than stopping the walk.
pub fn load_all(dir: &Path) -> Result<Vec<LoadedFile>> {
    let mut loaded = Vec::new();
    for path in files_with_extensions(dir, &["conflist"])? {
        let network = NetworkConfigList::from_file(&path);
        loaded.push(LoadedFile { path, network });
    }
    for path in files_with_extensions(dir, &["conf", "json"])? {
        let network = NetworkConfigList::from_single_plugin_file(&path);
        loaded.push(LoadedFile { path, network });
    }
    Ok(loaded)
}

/// The first network named `name` in `dir`. Unlike libcni, a malformed file
/// does not hide a valid one that comes after it; if the name is not found,
/// the error lists the files that could not be loaded.
pub fn find(dir: &Path, name: &str) -> Result<NetworkConfigList> {
    let mut broken = Vec::new();
    for file in load_all(dir)? {
        match file.network {
            Ok(network) if network.name == name => return Ok(network),
            Ok(_) => {}
            Err(e) => broken.push(e.to_string()),
        }
    }
    Err(Error::NetworkNotFound {
        name: name.to_string(),
        dir: dir.to_path_buf(),
        broken,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflists_come_before_single_plugin_files() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("00-a.conf", r#"{"name":"same","type":"from-conf"}"#);
        write(
            "50-b.conflist",
            r#"{"name":"same","plugins":[{"type":"from-list"}]}"#,
        );
        write("60-c.conflist", "not json");
        write("README", "ignored");
        std::fs::create_dir(dir.path().join("sub.conflist")).unwrap();

        let found = find(dir.path(), "same").unwrap();
        assert_eq!(found.plugins[0].plugin_type, "from-list");
        assert_eq!(
            found.source.as_deref(),
            Some(dir.path().join("50-b.conflist").as_path())
        );

        let err = find(dir.path(), "other").unwrap_err().to_string();
        assert!(
            err.contains("no network configuration named \"other\""),
            "{err}"
        );
        assert!(err.contains("60-c.conflist: invalid JSON"), "{err}");

        let all = load_all(dir.path()).unwrap();
        let names: Vec<_> = all
            .iter()
            .map(|f| f.path.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["50-b.conflist", "60-c.conflist", "00-a.conf"]);
    }

    #[test]
    fn plugins_from_a_sibling_directory_are_appended() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("net.conflist"),
            r#"{"name":"n","cniVersion":"1.1.0","plugins":[{"type":"first"}]}"#,
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("n")).unwrap();
        std::fs::write(dir.path().join("n/10-second.conf"), r#"{"type":"second"}"#).unwrap();
        let list = find(dir.path(), "n").unwrap();
        let types: Vec<_> = list
            .plugins
            .iter()
            .map(|p| p.plugin_type.as_str())
            .collect();
        assert_eq!(types, ["first", "second"]);
    }

    #[test]
    fn missing_directory_finds_nothing() {
        let err = find(Path::new("/nonexistent/cni"), "x").unwrap_err();
        assert!(matches!(err, Error::NetworkNotFound { .. }));
    }
}
