//! A directory of network configurations (`/etc/cni/net.d`): `.conflist`
//! files first, then single-plugin `.conf`/`.json` files, each group in
//! lexical order — the order libcni searches them, so both runtimes pick the
//! same file when two declare the same network name.
//!
//! This module owns the files: reading them, the search order, and the
//! per-network plugin directories of spec 1.1. Turning the bytes into types
//! is [`crate::config`]'s job, which knows nothing of files.

use std::path::{Path, PathBuf};

use crate::config::{NetworkConfigList, PluginConfig};
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

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Load a `.conflist` file, plus the plugin configurations kept in
/// `<dir>/<network name>/*.conf` unless `loadOnlyInlinedPlugins` (spec 1.1).
pub fn load_conflist(path: &Path) -> Result<NetworkConfigList> {
    let bytes = read(path)?;
    let origin = path.display().to_string();
    let mut list = NetworkConfigList::from_bytes(&bytes, &origin)?;
    list.source = Some(path.to_path_buf());
    if !list.load_only_inlined_plugins
        && let Some(dir) = path.parent()
    {
        list.plugins.extend(plugin_dir_configs(dir, &list.name)?);
    }
    if list.plugins.is_empty() {
        return Err(Error::InvalidConfig {
            origin,
            message: "no plugin configurations found".to_string(),
        });
    }
    Ok(list)
}

/// Load a single-plugin `.conf`/`.json` file as a one-plugin list.
pub fn load_single_plugin(path: &Path) -> Result<NetworkConfigList> {
    let bytes = read(path)?;
    let mut list =
        NetworkConfigList::from_single_plugin_bytes(&bytes, &path.display().to_string())?;
    list.source = Some(path.to_path_buf());
    Ok(list)
}

/// `<dir>/<name>/*.conf`, in lexical order; a missing directory is no error.
fn plugin_dir_configs(dir: &Path, network: &str) -> Result<Vec<PluginConfig>> {
    // A name with a path separator would escape the configuration directory.
    if network.is_empty() || network.contains('/') || network == "." || network == ".." {
        return Ok(Vec::new());
    }
    files_with_extensions(&dir.join(network), &["conf"])?
        .into_iter()
        .map(|path| PluginConfig::from_bytes(&read(&path)?, &path.display().to_string()))
        .collect()
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
        let network = load_conflist(&path);
        loaded.push(LoadedFile { path, network });
    }
    for path in files_with_extensions(dir, &["conf", "json"])? {
        let network = load_single_plugin(&path);
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
