//! Detached helpers: short-lived processes that take over the part of a
//! teardown the kernel makes the caller wait for after the removal is
//! already published (a link's RCU/refcount wait after RTM_DELLINK is
//! multicast, nf_tables' deferred destruction flush on an nfnetlink
//! socket's last release).
//!
//! A helper is double-forked, so nobody has to reap it: the intermediate
//! child is reaped before [`request`] or [`hold`] returns and the helper
//! itself is re-parented to init (or the nearest subreaper). Its stdin,
//! stdout and stderr are `/dev/null` and every other descriptor except the
//! ones it needs is closed, so a runtime waiting for the plugin's pipes to
//! close is not held up by it. After the fork it only makes raw,
//! async-signal-safe system calls on bytes prepared beforehand: the parent
//! may have other threads (holding locks the child would inherit locked).
//!
//! [`enabled`] is false when the environment asks for the old, synchronous
//! teardown ([`SYNC_TEARDOWN_ENV`]).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Set to `1` (or `true`) for synchronous teardown: the plugin itself waits
/// for the kernel to finish each removal, as the reference does.
pub const SYNC_TEARDOWN_ENV: &str = "CNI_RS_SYNC_TEARDOWN";

/// Whether teardown may be left to detached helpers.
pub fn enabled() -> bool {
    let sync = std::env::var(SYNC_TEARDOWN_ENV).unwrap_or_default();
    !matches!(sync.to_ascii_lowercase().as_str(), "1" | "true" | "yes")
}

/// `NLMSG_ERROR`: an acknowledgement or error reply.
const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;

/// Start a helper that sends the netlink `message` (one request asking for
/// an acknowledgement, sequence number `seq`) on `socket` and waits for
/// its reply, then writes the reply's errno (0 = success) as a native
/// `i32` to `report` and ends. If the reply cannot be read the helper ends
/// without writing: the reader of `report` then sees end of file.
///
/// The caller should close its own copies of `socket` and `report` after
/// this returns, so that only the helper holds them.
pub fn request(
    socket: BorrowedFd<'_>,
    message: &[u8],
    seq: u32,
    report: BorrowedFd<'_>,
) -> io::Result<()> {
    let sock = socket.as_raw_fd();
    let out = report.as_raw_fd();
    spawn(&[sock, out], &mut || {
        // SAFETY (whole block): raw syscalls on descriptors the helper
        // holds and on buffers that live on its stack or were allocated
        // before the fork.
        let sent = loop {
            let n = unsafe { libc::send(sock, message.as_ptr().cast(), message.len(), 0) };
            if n >= 0 || errno() != libc::EINTR {
                break n;
            }
        };
        if sent < 0 {
            report_errno(out, errno());
            return;
        }
        let mut buf = [0u8; 4096];
        loop {
            let n = unsafe { libc::recv(sock, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                if errno() == libc::EINTR {
                    continue;
                }
                return;
            }
            if n == 0 {
                return;
            }
            if let Some(code) = ack_code(&buf[..n as usize], seq) {
                report_errno(out, code);
                return;
            }
        }
    })
}

/// Start a helper that inherits `fds` and keeps them until the returned
/// guard is dropped: close your own copies of `fds` first, then drop the
/// guard. The helper's exit is then the last release of each, and whatever
/// the kernel does on that release happens in it. (A helper that ended at
/// once would race the caller's close: on the second core it usually wins,
/// and the caller's close became the last release again.)
pub fn hold(fds: &[BorrowedFd<'_>]) -> io::Result<OwnedFd> {
    let (release_r, release_w) = pipe()?;
    let rd = release_r.as_raw_fd();
    let mut raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    raw.push(rd);
    spawn(&raw, &mut || {
        // Wait for end of file: every copy of the write end is closed (the
        // caller dropped the guard, or exited).
        let mut byte = 0u8;
        loop {
            // SAFETY: a one-byte read into the stack.
            let n = unsafe { libc::read(rd, (&raw mut byte).cast(), 1) };
            if n == 0 || (n < 0 && errno() != libc::EINTR) {
                break;
            }
        }
        // One RCU grace period before the release: work the kernel
        // deferred past a grace period (nf_tables' destruction of deleted
        // rules) is then done, and the release has nothing left to wait
        // for while holding its locks (nf_tables' commit mutex, which the
        // next plugin's transaction in this namespace needs). Best effort:
        // without membarrier the release simply waits as before.
        // SAFETY: membarrier(2) takes no pointers.
        unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    })?;
    drop(release_r);
    Ok(release_w)
}

/// membarrier(2)'s command that waits for an RCU grace period.
const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 into a local array; checked.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The errno of the `NLMSG_ERROR` reply to `seq` in one datagram.
fn ack_code(mut buf: &[u8], seq: u32) -> Option<i32> {
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        let got = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        if kind == NLMSG_ERROR && got == seq && len >= NLMSG_HDRLEN + 4 {
            let b = &buf[NLMSG_HDRLEN..NLMSG_HDRLEN + 4];
            return Some(-i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
        }
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    None
}

fn report_errno(out: RawFd, code: i32) {
    let bytes = code.to_ne_bytes();
    // SAFETY: a 4-byte write from the stack to a pipe (atomic below PIPE_BUF).
    unsafe { libc::write(out, bytes.as_ptr().cast(), bytes.len()) };
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Double-fork a helper that keeps `keep` (each ≥ 3 after the parent's
/// preparation below), has `/dev/null` as stdio, runs `work` and exits.
fn spawn(keep: &[RawFd], work: &mut dyn FnMut()) -> io::Result<()> {
    // Everything the child needs is prepared here, before the fork.
    // SAFETY: open(2) of a constant path; checked.
    let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if null < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let null = unsafe { OwnedFd::from_raw_fd(null) };
    // Descriptors below 3 would be overwritten by the stdio redirection:
    // give those a copy at 3 or above (closed again when we return).
    let mut moved: Vec<OwnedFd> = Vec::new();
    let mut kept: Vec<RawFd> = Vec::with_capacity(keep.len() + 1);
    for &fd in keep {
        if fd < 3 {
            // SAFETY: fcntl on a descriptor the caller lent us; checked.
            let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
            if copy < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: a fresh descriptor we own.
            moved.push(unsafe { OwnedFd::from_raw_fd(copy) });
            kept.push(copy);
        } else {
            kept.push(fd);
        }
    }
    kept.sort_unstable();
    kept.dedup();
    let null_fd = null.as_raw_fd();
    let max_fd = open_files_limit();

    // SAFETY: fork(2). The child below only makes async-signal-safe calls
    // and leaves with _exit; the parent continues normally.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // Intermediate child: a new session (a signal to the plugin's
        // process group does not reach the helper), stdio on /dev/null and
        // nothing else open but `kept` — all before the parent's waitpid
        // returns, so the helper never holds the plugin's pipes, however
        // late it gets scheduled — then fork the helper and leave.
        // SAFETY (whole block): raw async-signal-safe syscalls; no return.
        unsafe {
            libc::setsid();
            for std_fd in 0..3 {
                libc::dup2(null_fd, std_fd);
            }
            close_all_but(&kept, max_fd);
            let helper = libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0);
            if helper != 0 {
                libc::_exit(if helper < 0 { 1 } else { 0 });
            }
            work();
            libc::_exit(0);
        }
    }
    drop(moved);
    drop(null);
    let mut status = 0;
    loop {
        // SAFETY: waitpid on the child we just forked.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if r < 0 && errno() != libc::EINTR {
            return Err(io::Error::last_os_error());
        }
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(io::Error::other("the teardown helper could not be started"))
    }
}

/// Close every descriptor from 3 up except those in `kept` (sorted).
/// Async-signal-safe: close_range(2), or close(2) one by one on kernels
/// without it.
///
/// # Safety
/// Only for a freshly forked child: it closes descriptors it does not own.
unsafe fn close_all_but(kept: &[RawFd], max_fd: RawFd) {
    let mut from: RawFd = 3;
    for &k in kept.iter().chain(std::iter::once(&RawFd::MAX)) {
        if k < from {
            continue;
        }
        if k > from {
            let last = if k == RawFd::MAX {
                u32::MAX
            } else {
                (k - 1) as u32
            };
            // SAFETY: see the function's contract.
            let r = unsafe { libc::syscall(libc::SYS_close_range, from as u32, last, 0u32) };
            if r != 0 {
                let end = if k == RawFd::MAX { max_fd } else { k };
                for fd in from..end {
                    // SAFETY: see the function's contract.
                    unsafe { libc::close(fd) };
                }
            }
        }
        from = k.saturating_add(1);
    }
}

/// The highest descriptor number worth closing one by one.
fn open_files_limit() -> RawFd {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
    if n <= 0 { 1024 } else { n.min(65536) as RawFd }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn pair(domain: libc::c_int, kind: libc::c_int) -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: socketpair/pipe2 into a local array; checked.
        let r = unsafe {
            if domain == 0 {
                libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC)
            } else {
                libc::socketpair(domain, kind | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr())
            }
        };
        assert_eq!(r, 0);
        // SAFETY: fresh descriptors we own.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    /// Read until end of file, at most 5 s; `None` on timeout.
    fn read_all(fd: &OwnedFd) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            let mut p = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll on one local pollfd.
            if unsafe { libc::poll(&mut p, 1, 5000) } <= 0 {
                return None;
            }
            // SAFETY: read into a local buffer.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return Some(out);
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
    }

    #[test]
    fn request_helper_holds_only_its_descriptors_and_reports_the_reply() {
        let (sock, kernel) = pair(libc::AF_UNIX, libc::SOCK_SEQPACKET);
        let (report_r, report_w) = pair(0, 0);
        let (other_r, other_w) = pair(0, 0);
        let mut msg = [0u8; 32];
        msg[..4].copy_from_slice(&32u32.to_ne_bytes());
        msg[8..12].copy_from_slice(&9u32.to_ne_bytes());
        request(sock.as_fd(), &msg, 9, report_w.as_fd()).expect("helper");
        drop(sock);
        drop(report_w);
        // The helper is now blocked waiting for the reply. It must not hold
        // a descriptor it was not given: closing ours ends the pipe.
        drop(other_w);
        assert_eq!(read_all(&other_r), Some(vec![]), "helper kept a stray fd");
        // It sent the prepared request...
        let mut got = [0u8; 64];
        // SAFETY: recv into a local buffer.
        let n = unsafe { libc::recv(kernel.as_raw_fd(), got.as_mut_ptr().cast(), 64, 0) };
        assert_eq!(n, 32);
        assert_eq!(&got[..32], &msg);
        // ...and reports the errno of the reply with its sequence number.
        let mut reply = [0u8; 36];
        reply[..4].copy_from_slice(&36u32.to_ne_bytes());
        reply[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        reply[8..12].copy_from_slice(&9u32.to_ne_bytes());
        reply[16..20].copy_from_slice(&(-libc::ENODEV).to_ne_bytes());
        // SAFETY: send from a local buffer.
        let n = unsafe { libc::send(kernel.as_raw_fd(), reply.as_ptr().cast(), 36, 0) };
        assert_eq!(n, 36);
        assert_eq!(
            read_all(&report_r),
            Some(libc::ENODEV.to_ne_bytes().to_vec())
        );
    }

    #[test]
    fn held_descriptor_outlives_our_copy_until_the_guard_is_dropped() {
        let (r, w) = pair(0, 0);
        let guard = hold(&[w.as_fd()]).expect("helper");
        drop(w);
        // The helper still holds the write end: no end of file yet.
        let mut p = libc::pollfd {
            fd: r.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one local pollfd.
        assert_eq!(
            unsafe { libc::poll(&mut p, 1, 200) },
            0,
            "helper ended early"
        );
        drop(guard);
        assert_eq!(read_all(&r), Some(vec![]));
    }

    #[test]
    fn acknowledgement_code_is_found_by_sequence() {
        let mut m = vec![0u8; 36];
        m[..4].copy_from_slice(&36u32.to_ne_bytes());
        m[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m[8..12].copy_from_slice(&7u32.to_ne_bytes());
        m[16..20].copy_from_slice(&(-19i32).to_ne_bytes());
        assert_eq!(ack_code(&m, 7), Some(19));
        assert_eq!(ack_code(&m, 8), None);
        assert_eq!(ack_code(&m[..10], 7), None);
    }
}
