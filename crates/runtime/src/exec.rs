//! Running one plugin binary: find it in `CNI_PATH`, exec it with the CNI
//! environment and the request on stdin, bound its run time, and turn what
//! it prints into a result or an error.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;

use crate::error::{CniError, PluginFailure, Verb};

/// Find the binary for plugin `plugin_type` in `dirs`, first match wins.
/// Like libcni, any regular file of that name counts; exec reports a
/// missing execute bit.
pub fn find_in_path(plugin_type: &str, dirs: &[PathBuf]) -> Result<PathBuf, PluginFailure> {
    if plugin_type.is_empty() || plugin_type.contains('/') || plugin_type == ".." {
        return Err(PluginFailure::InvalidType(plugin_type.to_string()));
    }
    dirs.iter()
        .map(|dir| dir.join(plugin_type))
        .find(|path| std::fs::metadata(path).is_ok_and(|m| m.is_file()))
        .ok_or_else(|| PluginFailure::NotFound {
            dirs: dirs.to_vec(),
        })
}

/// The CNI environment of one plugin run.
#[derive(Debug, Clone, Default)]
pub struct PluginEnv {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS` text.
    pub args: String,
    /// `CNI_PATH` text (the plugin directories joined with ':').
    pub path: String,
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

/// How often exec is retried when the binary is still being written
/// (ETXTBSY), as libcni does, e.g. while a package upgrade replaces it.
const TEXT_BUSY_RETRIES: u32 = 5;

/// Run `binary` for `verb`. The process environment is inherited and the
/// CNI variables set on top, as libcni does. With a `timeout`, the plugin
/// (and anything it started in its process group) is killed when it expires.
pub fn run_plugin(
    binary: &Path,
    verb: Verb,
    env: &PluginEnv,
    stdin: &[u8],
    timeout: Option<Duration>,
) -> Result<Success, Failure> {
    let mut command = Command::new(binary);
    command
        .env("CNI_COMMAND", verb.as_str())
        .env("CNI_CONTAINERID", &env.container_id)
        .env("CNI_NETNS", &env.netns)
        .env("CNI_ARGS", &env.args)
        .env("CNI_IFNAME", &env.ifname)
        .env("CNI_PATH", &env.path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout can kill the delegated IPAM
        // plugin and any other helper along with it.
        .process_group(0);

    let mut attempt = 0;
    let child = loop {
        match command.spawn() {
            Ok(child) => break child,
            Err(e)
                if e.raw_os_error() == Some(nix::libc::ETXTBSY) && attempt < TEXT_BUSY_RETRIES =>
            {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(source) => {
                return Err(Failure {
                    failure: PluginFailure::Spawn {
                        path: binary.to_path_buf(),
                        source,
                    },
                    stderr: String::new(),
                });
            }
        }
    };
    let (status, stdout, stderr, timed_out) = communicate(child, stdin, timeout);
    let stderr = String::from_utf8_lossy(&stderr).into_owned();
    let fail = |failure| Failure {
        failure,
        stderr: stderr.clone(),
    };
    if let Some(limit) = timed_out {
        return Err(fail(PluginFailure::Timeout(limit)));
    }
    let status = status.map_err(|e| fail(PluginFailure::Io(e)))?;
    let stdout = stdout.map_err(|e| fail(PluginFailure::Io(e)))?;
    if status.success() {
        return Ok(Success { stdout, stderr });
    }
    Err(fail(error_from_output(status, &stdout)))
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

type Communicated = (
    std::io::Result<ExitStatus>,
    std::io::Result<Vec<u8>>,
    Vec<u8>,
    Option<Duration>,
);

/// Feed stdin, collect stdout and stderr, and wait — all concurrently, so a
/// plugin that writes a lot before reading its input cannot deadlock us.
fn communicate(mut child: Child, stdin: &[u8], timeout: Option<Duration>) -> Communicated {
    let pid = Pid::from_raw(child.id() as i32);
    let input = child.stdin.take();
    let output = child.stdout.take();
    let errors = child.stderr.take();
    std::thread::scope(|s| {
        s.spawn(move || {
            if let Some(mut pipe) = input {
                // A plugin may exit without reading its input (EPIPE): fine.
                let _ = pipe.write_all(stdin);
            }
        });
        let out = s.spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = output {
                pipe.read_to_end(&mut buf)?;
            }
            Ok(buf)
        });
        let err = s.spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = errors {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        });

        let mut timed_out = None;
        if let Some(limit) = timeout {
            // Wait for the exit without reaping (WNOWAIT): until this
            // thread's `wait` below reaps it, the pid cannot be reused, so
            // killing it on timeout can never hit an unrelated process.
            let (tx, rx) = mpsc::channel();
            s.spawn(move || {
                while let Err(nix::errno::Errno::EINTR) =
                    waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
                {
                }
                let _ = tx.send(());
            });
            if rx.recv_timeout(limit).is_err() {
                timed_out = Some(limit);
                let _ = killpg(pid, Signal::SIGKILL);
            }
        }
        let status = child.wait();
        let stdout = out
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("stdout reader panicked")));
        let stderr = err.join().unwrap_or_default();
        (status, stdout, stderr, timed_out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
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
        assert!(matches!(
            find_in_path("../x", &dirs),
            Err(PluginFailure::InvalidType(_))
        ));
    }
}
