//! Running a plugin binary, for both sides of the protocol: a plugin
//! delegating to its IPAM plugin and a runtime running a chain. Find the
//! binary in `CNI_PATH`, exec it with the CNI environment and the request on
//! stdin, optionally bound its run time, and hand back what it printed.
//! Interpreting the output (a result, a CNI error) is the caller's business.

use crate::env::Command;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Why a plugin name could not be turned into a binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindError {
    /// The name is empty.
    NoName,
    /// The name is a path (`a/b`, `/bin/sh`) or `.` / `..`: a name is looked
    /// up, never used as a path, so `../x` can never reach exec.
    InvalidName(String),
    /// No directory holds a regular file of that name.
    NotFound,
}

/// Find the binary for plugin `name` in `dirs`, first match wins. Like
/// libcni, any regular file of that name counts; exec reports a missing
/// execute bit.
pub fn find_in_path(name: &str, dirs: &[PathBuf]) -> Result<PathBuf, FindError> {
    if name.is_empty() {
        return Err(FindError::NoName);
    }
    if name.contains('/') || name == "." || name == ".." {
        return Err(FindError::InvalidName(name.to_string()));
    }
    dirs.iter()
        .map(|dir| dir.join(name))
        .find(|path| std::fs::metadata(path).is_ok_and(|m| m.is_file()))
        .ok_or(FindError::NotFound)
}

/// `CNI_PATH` text for `dirs` (joined with ':').
pub fn join_path(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// The CNI environment of one plugin run. The process environment is
/// inherited and these variables set on top, as libcni does.
#[derive(Debug, Clone, Default)]
pub struct PluginEnv {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS` text; `None` leaves the inherited value (a delegating
    /// plugin passes its own `CNI_ARGS` on unchanged).
    pub args: Option<String>,
    /// `CNI_PATH` text (the plugin directories joined with ':').
    pub path: String,
}

/// How to run: an optional time bound, and whether the plugin gets a
/// process group of its own.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// Kill the plugin (and its process group) when this expires.
    pub timeout: Option<Duration>,
    /// Start the plugin in its own process group, so a timeout kills a
    /// delegated IPAM plugin and any other helper along with it. A plugin
    /// delegating leaves this off: its child stays in the group a runtime
    /// would kill.
    pub own_process_group: bool,
}

/// What a plugin did: its exit status and everything it printed.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// A run that produced no usable [`Output`].
#[derive(Debug)]
pub enum RunError {
    /// exec failed (missing execute bit, bad interpreter, still busy).
    Spawn(std::io::Error),
    /// Waiting for it or reading its stdout failed.
    Io {
        error: std::io::Error,
        stderr: Vec<u8>,
    },
    /// It ran longer than [`Limits::timeout`] and was killed.
    Timeout { limit: Duration, stderr: Vec<u8> },
}

/// How often exec is retried when the binary is still being written
/// (ETXTBSY), e.g. while a package upgrade replaces it; libcni retries too.
const TEXT_BUSY_RETRIES: u32 = 5;
const TEXT_BUSY_PAUSE: Duration = Duration::from_millis(200);

/// Run `binary` for `command` with `env` and `stdin`.
pub fn run(
    binary: &Path,
    command: Command,
    env: &PluginEnv,
    stdin: &[u8],
    limits: Limits,
) -> Result<Output, RunError> {
    let mut process = Process::new(binary);
    process
        .env("CNI_COMMAND", command.as_str())
        .env("CNI_CONTAINERID", &env.container_id)
        .env("CNI_NETNS", &env.netns)
        .env("CNI_IFNAME", &env.ifname)
        .env("CNI_PATH", &env.path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(args) = &env.args {
        process.env("CNI_ARGS", args);
    }
    if limits.own_process_group {
        process.process_group(0);
    }
    let child = spawn_retrying(&mut process).map_err(RunError::Spawn)?;
    let done = communicate(child, stdin, limits.timeout);
    if let Some(limit) = done.timed_out {
        return Err(RunError::Timeout {
            limit,
            stderr: done.stderr,
        });
    }
    let io = |error| RunError::Io {
        error,
        stderr: done.stderr.clone(),
    };
    let status = done.status.map_err(io)?;
    let stdout = done.stdout.map_err(io)?;
    Ok(Output {
        status,
        stdout,
        stderr: done.stderr,
    })
}

fn spawn_retrying(process: &mut Process) -> std::io::Result<Child> {
    let mut attempt = 0;
    loop {
        match process.spawn() {
            Ok(child) => return Ok(child),
            Err(e)
                if e.raw_os_error() == Some(nix::libc::ETXTBSY) && attempt < TEXT_BUSY_RETRIES =>
            {
                attempt += 1;
                std::thread::sleep(TEXT_BUSY_PAUSE);
            }
            Err(e) => return Err(e),
        }
    }
}

struct Communicated {
    status: std::io::Result<ExitStatus>,
    stdout: std::io::Result<Vec<u8>>,
    stderr: Vec<u8>,
    timed_out: Option<Duration>,
}

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
                // A plugin may exit without reading its input (EPIPE): its
                // exit status and output say why.
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
        Communicated {
            status,
            stdout,
            stderr,
            timed_out,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        test_support::write_executable(dir, name, &format!("#!/bin/sh\n{body}\n")).unwrap()
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cni-exec-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn names_are_looked_up_never_used_as_paths() {
        let dirs = vec![PathBuf::from("/usr/bin")];
        for bad in ["../sh", "/bin/sh", "a/b", "..", "."] {
            assert_eq!(
                find_in_path(bad, &dirs),
                Err(FindError::InvalidName(bad.to_string()))
            );
        }
        assert_eq!(find_in_path("", &dirs), Err(FindError::NoName));
        assert_eq!(find_in_path("sh", &[]), Err(FindError::NotFound));
    }

    #[test]
    fn env_stdin_and_output_round_trip() {
        let d = temp_dir("echo");
        let p = script(
            &d,
            "echo",
            r#"read line; printf '%s|%s|%s|%s' "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_ARGS" "$line"; echo note >&2"#,
        );
        let env = PluginEnv {
            container_id: "c1".into(),
            args: Some("K=V".into()),
            ..Default::default()
        };
        let out = run(&p, Command::Del, &env, b"{}\n", Limits::default());
        std::fs::remove_dir_all(&d).unwrap();
        let out = out.unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"DEL|c1|K=V|{}");
        assert_eq!(out.stderr, b"note\n");
    }

    #[test]
    fn timeout_kills_the_process_group() {
        let d = temp_dir("slow");
        let p = script(&d, "slow", "sleep 30 & sleep 30");
        let start = std::time::Instant::now();
        let limits = Limits {
            timeout: Some(Duration::from_millis(300)),
            own_process_group: true,
        };
        let r = run(&p, Command::Add, &PluginEnv::default(), b"", limits);
        std::fs::remove_dir_all(&d).unwrap();
        assert!(matches!(r, Err(RunError::Timeout { .. })));
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
