//! Running the netfilter programs: found once by path (no shell, ever),
//! arguments passed as a vector, batches written to stdin.

use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// Directories searched when `$PATH` is unset or empty (a runtime that
/// clears the environment). A set `$PATH` is authoritative, as for the
/// reference (`exec.LookPath`): it is how an administrator chooses between
/// `iptables-legacy` and `iptables-nft` wrappers.
const FALLBACK_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

thread_local! {
    static SPAWNED: Cell<usize> = const { Cell::new(0) };
}

/// How many external processes this crate has started on the calling thread
/// (used to measure the cost of an operation; each netns test runs on its
/// own thread).
pub fn processes_spawned_on_this_thread() -> usize {
    SPAWNED.with(|c| c.get())
}

/// Where `program` is in `$PATH` (or the usual directories without one).
/// Costs a few `stat`s, no process.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let dirs: Vec<PathBuf> = match std::env::var_os("PATH") {
        Some(p) if !p.is_empty() => std::env::split_paths(&p).collect(),
        _ => FALLBACK_DIRS.iter().map(PathBuf::from).collect(),
    };
    dirs.into_iter()
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_absolute() && is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A program that was found, named for messages.
#[derive(Debug, Clone)]
pub struct Program {
    pub name: &'static str,
    pub path: PathBuf,
}

impl Program {
    pub fn find(name: &'static str) -> Result<Program> {
        find_program(name)
            .map(|path| Program { name, path })
            .ok_or(Error::ProgramNotFound(name))
    }

    /// Run with `args`, feeding `stdin` if given; return stdout on success.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        SPAWNED.with(|c| c.set(c.get() + 1));
        let mut child = Command::new(&self.path)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| Error::Spawn {
                program: self.name.to_string(),
                source,
            })?;
        // Write stdin from another thread: a large batch could otherwise
        // fill the pipe while the child blocks on a full stdout pipe.
        let output = std::thread::scope(|s| {
            if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
                s.spawn(move || {
                    // A write error shows up as the child's failure below.
                    let _ = pipe.write_all(input.as_bytes());
                });
            }
            child.wait_with_output()
        })
        .map_err(|source| Error::Spawn {
            program: self.name.to_string(),
            source,
        })?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(Error::Command {
                program: format!("{} {}", self.name, args.join(" ")),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            })
        }
    }
}
