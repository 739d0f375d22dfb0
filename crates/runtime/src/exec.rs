//! Running one plugin binary for the runtime: the shared runner of
//! [`cni::exec`] (find in `CNI_PATH`, exec with the CNI environment and the
//! request on stdin, ETXTBSY retry, time bound), with what the plugin
//! printed turned into a result or a [`PluginFailure`].

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use cni::exec::{self, FindError, Limits, RunError};

use crate::error::{CniError, PluginFailure, Verb};

pub use cni::exec::PluginEnv;

/// Find the binary for plugin `plugin_type` in `dirs`, first match wins.
/// Like libcni, any regular file of that name counts; exec reports a
/// missing execute bit.
pub fn find_in_path(plugin_type: &str, dirs: &[PathBuf]) -> Result<PathBuf, PluginFailure> {
    exec::find_in_path(plugin_type, dirs).map_err(|e| match e {
        FindError::NoName | FindError::InvalidName(_) => {
            PluginFailure::InvalidType(plugin_type.to_string())
        }
        FindError::NotFound => PluginFailure::NotFound {
            dirs: dirs.to_vec(),
        },
    })
}

/// What a plugin printed when it exited 0.
#[derive(Debug)]
pub struct Success {
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// A failed run: why, and the plugin's stderr.
#[derive(Debug)]
pub struct Failure {
    pub failure: PluginFailure,
    pub stderr: String,
}

/// Run `binary` for `verb`. The process environment is inherited and the
/// CNI variables set on top, as libcni does. The plugin runs in its own
/// process group; with a `timeout`, it (and anything it started in that
/// group) is killed when it expires.
pub fn run_plugin(
    binary: &Path,
    verb: Verb,
    env: &PluginEnv,
    stdin: &[u8],
    timeout: Option<Duration>,
) -> Result<Success, Failure> {
    let limits = Limits {
        timeout,
        own_process_group: true,
    };
    let lossy = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let out = exec::run(binary, verb, env, stdin, limits).map_err(|e| match e {
        RunError::Spawn(source) => Failure {
            failure: PluginFailure::Spawn {
                path: binary.to_path_buf(),
                source,
            },
            stderr: String::new(),
        },
        RunError::Io { error, stderr } => Failure {
            failure: PluginFailure::Io(error),
            stderr: lossy(&stderr),
        },
        RunError::Timeout { limit, stderr } => Failure {
            failure: PluginFailure::Timeout(limit),
            stderr: lossy(&stderr),
        },
    })?;
    let stderr = lossy(&out.stderr);
    if out.status.success() {
        return Ok(Success {
            stdout: out.stdout,
            stderr,
        });
    }
    Err(Failure {
        failure: error_from_output(out.status, &out.stdout),
        stderr,
    })
}

/// A failed plugin's stdout should hold a CNI error object.
fn error_from_output(status: ExitStatus, stdout: &[u8]) -> PluginFailure {
    if stdout.iter().all(u8::is_ascii_whitespace) {
        return PluginFailure::Exited(status);
    }
    match serde_json::from_slice::<CniError>(stdout) {
        Ok(error) => PluginFailure::Cni(error),
        Err(_) => PluginFailure::BadErrorOutput {
            status,
            stdout: String::from_utf8_lossy(stdout).into_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        test_support::write_executable(dir, name, &format!("#!/bin/sh\n{body}\n")).unwrap()
    }

    #[test]
    fn passes_env_and_stdin_and_reads_stdout() {
        let dir = tempfile::tempdir().unwrap();
        let p = script(
            dir.path(),
            "echo",
            r#"read line; printf '{"cmd":"%s","id":"%s","in":%s}' "$CNI_COMMAND" "$CNI_CONTAINERID" "$line"; echo note >&2"#,
        );
        let env = PluginEnv {
            container_id: "c1".into(),
            args: Some(String::new()),
            ..Default::default()
        };
        let ok = run_plugin(&p, Verb::Add, &env, b"{\"a\":1}\n", None).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
        assert_eq!(v["cmd"], "ADD");
        assert_eq!(v["id"], "c1");
        assert_eq!(v["in"]["a"], 1);
        assert_eq!(ok.stderr, "note\n");
    }

    #[test]
    fn failure_carries_cni_error_and_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let p = script(
            dir.path(),
            "fail",
            r#"echo '{"code":7,"msg":"bad","details":"x"}'; echo why >&2; exit 1"#,
        );
        let f = run_plugin(&p, Verb::Del, &PluginEnv::default(), b"", None).unwrap_err();
        match f.failure {
            PluginFailure::Cni(e) => assert_eq!((e.code, e.msg.as_str()), (7, "bad")),
            other => panic!("{other:?}"),
        }
        assert_eq!(f.stderr, "why\n");

        let p = script(dir.path(), "crash", "echo boom >&2; exit 3");
        let f = run_plugin(&p, Verb::Del, &PluginEnv::default(), b"", None).unwrap_err();
        assert!(matches!(f.failure, PluginFailure::Exited(s) if s.code() == Some(3)));
        assert_eq!(f.stderr, "boom\n");
    }

    #[test]
    fn timeout_kills_the_plugin_and_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let p = script(dir.path(), "slow", "sleep 30 & sleep 30");
        let start = std::time::Instant::now();
        let f = run_plugin(
            &p,
            Verb::Add,
            &PluginEnv::default(),
            b"",
            Some(Duration::from_millis(300)),
        )
        .unwrap_err();
        assert!(matches!(f.failure, PluginFailure::Timeout(_)));
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn finds_plugins_in_order() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        script(b.path(), "x", "true");
        let dirs = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(find_in_path("x", &dirs).unwrap(), b.path().join("x"));
        assert!(matches!(
            find_in_path("y", &dirs),
            Err(PluginFailure::NotFound { .. })
        ));
        for bad in ["../x", ".", "..", ""] {
            assert!(matches!(
                find_in_path(bad, &dirs),
                Err(PluginFailure::InvalidType(_))
            ));
        }
    }
}
