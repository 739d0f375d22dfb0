//! Running a plugin binary, for both sides of the protocol: a plugin
//! delegating to its IPAM plugin and a runtime running a chain. Find the
//! binary in `CNI_PATH`, exec it with the CNI environment and the request on
//! stdin, optionally bound its run time, and hand back what it printed.
//! Interpreting the output (a result, a CNI error) is the caller's business.

use crate::env::Command;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, pipe2};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command as Process, ExitStatus, Stdio};
use std::time::{Duration, Instant};

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
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(args) = &env.args {
        process.env("CNI_ARGS", args);
    }
    if limits.own_process_group {
        process.process_group(0);
    }
    // The request goes into the pipe before the plugin starts, so the
    // plugin never waits for its input: a request fits the pipe's buffer
    // (64 KiB by default); any rest is fed from the poll loop.
    let (input_r, input_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| RunError::Spawn(e.into()))?;
    let mut input = File::from(input_w);
    fcntl(&input, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(|e| RunError::Spawn(e.into()))?;
    let written = prefill(&mut input, stdin);
    process.stdin(Stdio::from(input_r));
    let child = spawn_retrying(&mut process).map_err(RunError::Spawn)?;
    // Our copy of the read end goes with `process`: a plugin that exits
    // without reading makes the rest of the input fail to write (EPIPE).
    drop(process);
    let input = (written < stdin.len()).then_some(input);
    let done = communicate(child, input, &stdin[written..], limits.timeout);
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

/// Feed stdin, collect stdout and stderr, and wait, all from this thread:
/// one poll(2) loop over the three pipes, so a plugin that writes a lot
/// before reading its input cannot deadlock us, and a run starts no thread.
/// (A thread per pipe and one for the time bound cost the bench chain's
/// ADD+DEL, three runs, about 4 of its 15 ms on 2 cores, much of it a
/// plugin waiting for its input until the writer thread got a core.) With
/// a time bound, the bound covers the whole run: output still open when it
/// expires, or a plugin still running after it closed its output, gets the
/// process group killed.
fn communicate(
    mut child: Child,
    input: Option<File>,
    stdin: &[u8],
    timeout: Option<Duration>,
) -> Communicated {
    let pid = Pid::from_raw(child.id() as i32);
    let deadline = timeout.map(|limit| (limit, Instant::now() + limit));
    let mut pipes = Pipes {
        input,
        written: 0,
        output: child.stdout.take(),
        errors: child.stderr.take(),
        stdout: Vec::new(),
        stderr: Vec::new(),
        read_error: None,
    };
    let mut timed_out = None;
    let closed = pipes.run(stdin, deadline.map(|(_, at)| at));
    if let Some((limit, at)) = deadline
        && !(closed && wait_for_exit(pid, at))
    {
        timed_out = Some(limit);
        let _ = killpg(pid, Signal::SIGKILL);
    }
    Communicated {
        status: child.wait(),
        stdout: pipes.read_error.map_or(Ok(pipes.stdout), Err),
        stderr: pipes.stderr,
        timed_out,
    }
}

/// Write what the (non-blocking) pipe takes of `stdin`; how much it took.
fn prefill(pipe: &mut File, stdin: &[u8]) -> usize {
    let mut written = 0;
    while written < stdin.len() {
        match pipe.write(&stdin[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    written
}

/// The plugin's three pipes and what came out of them so far.
struct Pipes {
    /// The input pipe while some of the request is still to be written.
    input: Option<File>,
    written: usize,
    output: Option<ChildStdout>,
    errors: Option<ChildStderr>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    read_error: Option<std::io::Error>,
}

impl Pipes {
    /// Move bytes until stdout and stderr are closed or `deadline` passes.
    /// Returns false when the deadline cut the run short (the output may
    /// still be open), true otherwise.
    fn run(&mut self, stdin: &[u8], deadline: Option<Instant>) -> bool {
        while self.output.is_some() || self.errors.is_some() {
            let wait = match deadline {
                None => PollTimeout::NONE,
                Some(at) => match poll_timeout(at) {
                    Some(t) => t,
                    None => return false,
                },
            };
            let (input, output, errors) = match self.poll(wait) {
                Ok(Some(ready)) => ready,
                Ok(None) => continue,
                Err(error) => {
                    self.read_error = Some(error);
                    return true;
                }
            };
            if input {
                self.feed(stdin);
            }
            if output && let Some(pipe) = &mut self.output {
                match drain(pipe, &mut self.stdout) {
                    Ok(false) => {}
                    Ok(true) => self.output = None,
                    Err(error) => {
                        self.read_error = Some(error);
                        self.output = None;
                    }
                }
            }
            if errors
                && let Some(pipe) = &mut self.errors
                && !matches!(drain(pipe, &mut self.stderr), Ok(false))
            {
                self.errors = None;
            }
        }
        true
    }

    /// One poll(2) over the open pipes: which are ready (input, output,
    /// errors), or None when it timed out or was interrupted.
    fn poll(&self, wait: PollTimeout) -> std::io::Result<Option<(bool, bool, bool)>> {
        let ready =
            PollFlags::POLLIN | PollFlags::POLLOUT | PollFlags::POLLERR | PollFlags::POLLHUP;
        let mut fds = Vec::with_capacity(3);
        let input = slot(&mut fds, self.input.as_ref(), PollFlags::POLLOUT);
        let output = slot(&mut fds, self.output.as_ref(), PollFlags::POLLIN);
        let errors = slot(&mut fds, self.errors.as_ref(), PollFlags::POLLIN);
        match poll(&mut fds, wait) {
            Ok(0) | Err(Errno::EINTR) => return Ok(None),
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        let is_ready = |slot: Option<usize>| {
            slot.is_some_and(|i| fds[i].revents().is_some_and(|r| r.intersects(ready)))
        };
        Ok(Some((is_ready(input), is_ready(output), is_ready(errors))))
    }

    /// Write what the pipe takes of the rest of `stdin`; close it when all
    /// is written or the plugin stopped reading (EPIPE: its exit status and
    /// output say why).
    fn feed(&mut self, stdin: &[u8]) {
        let Some(pipe) = &mut self.input else { return };
        match pipe.write(&stdin[self.written..]) {
            Ok(n) => self.written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return,
            Err(_) => self.written = stdin.len(),
        }
        if self.written >= stdin.len() {
            self.input = None;
        }
    }
}

/// Add `pipe`, if open, to the poll set; its index there.
fn slot<'a>(
    fds: &mut Vec<PollFd<'a>>,
    pipe: Option<&'a impl AsFd>,
    events: PollFlags,
) -> Option<usize> {
    let pipe = pipe?;
    fds.push(PollFd::new(pipe.as_fd(), events));
    Some(fds.len() - 1)
}

/// Read what `pipe` holds into `buf`; true at end of file.
fn drain(pipe: &mut impl Read, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut chunk = [0u8; 16 * 1024];
    match pipe.read(&mut chunk) {
        Ok(0) => Ok(true),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(false),
        Err(e) => Err(e),
    }
}

/// The time left until `at` for poll(2), rounded up to whole milliseconds;
/// None once it has passed.
fn poll_timeout(at: Instant) -> Option<PollTimeout> {
    let left = at.checked_duration_since(Instant::now())?;
    if left.is_zero() {
        return None;
    }
    let ms = left.as_micros().div_ceil(1000);
    Some(PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX))
}

/// Wait until `pid` exits (without reaping it, so the pid cannot be reused
/// before the caller kills its group) or `at` passes; true if it exited.
/// Uses a pidfd; on a kernel without one (before 5.3) the exit is awaited
/// without bound.
fn wait_for_exit(pid: Pid, at: Instant) -> bool {
    let Some(pidfd) = pidfd_open(pid) else {
        return true;
    };
    loop {
        let Some(wait) = poll_timeout(at) else {
            return false;
        };
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, wait) {
            Ok(0) | Err(Errno::EINTR) => continue,
            // Ready, or poll itself failed: either way the reaping wait
            // that follows has the last word.
            Ok(_) | Err(_) => return true,
        }
    }
}

/// A pidfd for `pid` (pidfd_open(2)), or None where the kernel has none.
fn pidfd_open(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new file
    // descriptor or -1; nothing else owns the returned descriptor.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid.as_raw(), 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: fd was just returned by the kernel and is owned by no one else.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
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

    /// Runs a script plugin `body` (in a directory of its own, removed
    /// after) with `input` and `limits`, no environment.
    fn run_script(
        name: &str,
        body: &str,
        input: &[u8],
        limits: Limits,
    ) -> Result<Output, RunError> {
        let d = temp_dir(name);
        let p = script(&d, name, body);
        let r = run(&p, Command::Add, &PluginEnv::default(), input, limits);
        std::fs::remove_dir_all(&d).unwrap();
        r
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
    fn large_input_and_output_cross_without_deadlock() {
        // Writes 1 MiB to each of stdout and stderr before reading any of
        // its 1 MiB of input: with either side blocking, nobody moves.
        let out = run_script(
            "large",
            "head -c 1048576 /dev/zero; head -c 1048576 /dev/zero >&2; wc -c",
            &vec![b'x'; 1 << 20],
            Limits::default(),
        )
        .unwrap();
        assert!(out.status.success());
        let count = String::from_utf8_lossy(&out.stdout[1 << 20..])
            .trim()
            .to_string();
        assert_eq!(out.stdout.len(), (1 << 20) + count.len() + 1);
        assert_eq!(count, "1048576");
        assert_eq!(out.stderr.len(), 1 << 20);
    }

    #[test]
    fn a_plugin_that_never_reads_its_input_still_reports() {
        let out = run_script(
            "deaf",
            "exec 0<&-; echo done; exit 4",
            &vec![b'x'; 1 << 20],
            Limits::default(),
        )
        .unwrap();
        assert_eq!(out.status.code(), Some(4));
        assert_eq!(out.stdout, b"done\n");
    }

    /// Runs a script plugin with a 300 ms bound in its own process group and
    /// asserts that the bound ended it well before its `sleep 30`.
    fn assert_times_out(name: &str, body: &str, input: &[u8]) {
        let start = std::time::Instant::now();
        let limits = Limits {
            timeout: Some(Duration::from_millis(300)),
            own_process_group: true,
        };
        let r = run_script(name, body, input, limits);
        assert!(matches!(r, Err(RunError::Timeout { .. })), "{r:?}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn timeout_covers_a_plugin_that_closed_its_output() {
        assert_times_out("quiet", "exec >/dev/null 2>&1; sleep 30", b"{}");
    }

    #[test]
    fn timeout_kills_the_process_group() {
        assert_times_out("slow", "sleep 30 & sleep 30", b"");
    }
}
