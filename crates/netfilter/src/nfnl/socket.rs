//! A minimal NETLINK_NETFILTER client: enough to dump conntrack entries and
//! nf_tables tables/chains, and to send single requests, without starting
//! a process. Messages are built and parsed by hand (a few fixed layouts).

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

const NETLINK_NETFILTER: libc::c_int = 12;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 1;
pub const NLM_F_ACK: u16 = 4;
pub const NLM_F_DUMP: u16 = 0x300;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLMSG_HDRLEN: usize = 16;
/// `struct nfgenmsg`: family, version, resource id.
pub const NFGENMSG_LEN: usize = 4;

pub fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// One netlink attribute (`struct nlattr`), padded to 4 bytes.
pub fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
    let len = 4 + payload.len();
    let mut a = Vec::with_capacity(align(len));
    a.extend_from_slice(&(len as u16).to_ne_bytes());
    a.extend_from_slice(&kind.to_ne_bytes());
    a.extend_from_slice(payload);
    a.resize(align(len), 0);
    a
}

/// A NUL-terminated string attribute.
pub fn attr_str(kind: u16, s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    attr(kind, &v)
}

/// Closed on drop — or, once this process has committed a deletion, handed
/// to [`release_sockets`] (see there).
pub struct Socket(ManuallyDrop<OwnedFd>);

thread_local! {
    static SOCKET: std::cell::RefCell<Option<Socket>> = const { std::cell::RefCell::new(None) };
}

/// Run `f` with this thread's NETLINK_NETFILTER socket, opened on first use
/// and kept until the thread ends.
///
/// Why one socket, kept open: releasing an nfnetlink socket makes nf_tables
/// wait for the destruction of everything earlier transactions deleted — an
/// RCU grace period, about 10 ms here. Opening a socket per operation pays
/// that on every close after a deletion; one socket pays it once, when the
/// process exits. Per thread, because a socket belongs to the network
/// namespace it was created in, and threads are how this workspace enters
/// namespaces.
pub fn with_socket<T>(f: impl FnOnce(&Socket) -> io::Result<T>) -> io::Result<T> {
    SOCKET.with(|cell| {
        // Re-entered (a caller inside another's callback): use a socket of
        // its own rather than share one mid-conversation.
        let Ok(mut slot) = cell.try_borrow_mut() else {
            return f(&Socket::open()?);
        };
        if slot.is_none() {
            *slot = Some(Socket::open()?);
        }
        match slot.as_ref() {
            Some(sock) => {
                // Replies left over from an operation that stopped at its
                // first error must not be read as this one's.
                sock.drain();
                f(sock)
            }
            None => Err(io::Error::other("netlink socket unavailable")),
        }
    })
}

impl Socket {
    fn open() -> io::Result<Socket> {
        // SAFETY: plain socket(2); the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(Socket(ManuallyDrop::new(unsafe {
            OwnedFd::from_raw_fd(fd)
        })))
    }

    pub fn send(&self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: an all-zero sockaddr_nl is valid (pid 0 = the kernel).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: msg and addr are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Discard whatever is queued, without blocking.
    fn drain(&self) {
        let mut buf = [0u8; 8192];
        loop {
            // SAFETY: buf is writable for its length.
            let n = unsafe {
                libc::recv(
                    self.0.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                return;
            }
        }
    }

    /// Receive one datagram into `buf`'s capacity (its contents are
    /// replaced). Unlike a zero-filled buffer, memory the kernel does not
    /// write is never touched, so a large receive buffer costs no resident
    /// pages beyond the reply's own.
    pub fn recv_into(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        buf.clear();
        let spare = buf.spare_capacity_mut();
        // SAFETY: spare is writable for spare.len() bytes; recv writes at
        // most that many and returns how many it wrote.
        let n = unsafe {
            libc::recv(
                self.0.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel initialised the first n bytes.
        unsafe { buf.set_len(n as usize) };
        Ok(n as usize)
    }

    /// Send a non-dump request that asks for an acknowledgement
    /// (`NLM_F_ACK`) and pass each reply before it to `each`.
    pub fn request(&self, request: &[u8], each: impl FnMut(u16, &[u8])) -> io::Result<()> {
        self.exchange(request, false, each)
    }

    /// Send a dump request and hand every reply message's payload (after
    /// the nfgenmsg header's start) with its type to `each`.
    pub fn dump(&self, request: &[u8], each: impl FnMut(u16, &[u8])) -> io::Result<()> {
        self.exchange(request, true, each)
    }

    /// Send `request` and read replies until the end: the acknowledgement
    /// (`NLMSG_ERROR` with code 0) of a request, `NLMSG_DONE` of a dump,
    /// where a dump's acknowledgements are passed over.
    fn exchange(
        &self,
        request: &[u8],
        dump: bool,
        mut each: impl FnMut(u16, &[u8]),
    ) -> io::Result<()> {
        self.send(request)?;
        let mut buf = Vec::with_capacity(RECV_BUFFER);
        loop {
            let n = self.recv_into(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            for (kind, payload) in messages(&buf[..n]) {
                match kind {
                    NLMSG_DONE if dump => return Ok(()),
                    NLMSG_ERROR => match error_code(payload) {
                        0 if dump => {}
                        0 => return Ok(()),
                        code => return Err(io::Error::from_raw_os_error(code)),
                    },
                    _ => each(kind, payload),
                }
            }
        }
    }
}

/// Capacity of a receive buffer: a dump datagram is at most a page or
/// two, an ack smaller still; what is not written is never touched.
pub const RECV_BUFFER: usize = 1 << 16;

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: taken once, here; the field is never used again.
        let fd = unsafe { ManuallyDrop::take(&mut self.0) };
        if DELETED.load(Ordering::Acquire) {
            let full = {
                let mut list = released();
                list.push(fd);
                list.len() >= RELEASE_BATCH
            };
            // A long-running process with many threads: do not hoard.
            if full {
                hand_over_released();
            }
        }
    }
}

/// At most this many collected sockets wait for [`release_sockets`].
const RELEASE_BATCH: usize = 32;

/// Set once a transaction that deleted something was committed (and
/// teardown may be detached): from then on, a socket's last close would
/// wait for nf_tables' deferred destruction.
static DELETED: AtomicBool = AtomicBool::new(false);
/// Sockets whose last close is left to the helper of [`release_sockets`].
static RELEASED: Mutex<Vec<OwnedFd>> = Mutex::new(Vec::new());
static AT_EXIT: std::sync::Once = std::sync::Once::new();

fn released() -> std::sync::MutexGuard<'static, Vec<OwnedFd>> {
    RELEASED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Called after a committed transaction that deleted rules or chains.
///
/// When the last reference to an nfnetlink socket goes, nf_tables waits
/// for the destruction of everything deleted so far (`NETLINK_URELEASE` →
/// `nf_tables_trans_destroy_flush_work`: an RCU grace period, 10–13 ms of
/// a portmap DEL here), although the rules left every listing at commit.
/// From here on sockets are not closed by us but collected, and
/// [`release_sockets`] — run at exit at the latest — hands them to a
/// detached helper whose exit is their last release. Not with synchronous
/// teardown ([`netns::detach::SYNC_TEARDOWN_ENV`]).
pub(crate) fn note_deletion() {
    if DELETED.load(Ordering::Relaxed) || !netns::detach::enabled() {
        return;
    }
    DELETED.store(true, Ordering::Release);
    AT_EXIT.call_once(|| {
        // SAFETY: registering a plain extern "C" function that never unwinds.
        unsafe { libc::atexit(release_at_exit) };
    });
}

extern "C" fn release_at_exit() {
    let _ = std::panic::catch_unwind(release_sockets);
}

/// Hand every netfilter socket this process no longer needs — the calling
/// thread's and those of threads that have ended — to one detached helper
/// ([`netns::detach::hold`]) and close our copies: the kernel's wait on
/// their last release then happens in the helper, not in this process.
/// Nothing to do (and no helper) unless a deletion was committed. Runs on
/// its own at exit; a plugin may call it earlier, once its netfilter work
/// is done.
pub fn release_sockets() {
    if !DELETED.load(Ordering::Acquire) {
        return;
    }
    // This thread's socket (during exit its slot may be gone already: its
    // destructor has put it in the list then).
    let _ = SOCKET.try_with(|cell| {
        if let Ok(mut slot) = cell.try_borrow_mut() {
            drop(slot.take());
        }
    });
    hand_over_released();
}

/// The collected sockets to one helper; our copies closed.
fn hand_over_released() {
    let fds = std::mem::take(&mut *released());
    if fds.is_empty() {
        return;
    }
    let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
    // Failing to start the helper only means waiting here, as before.
    let guard = netns::detach::hold(&borrowed);
    drop(borrowed);
    drop(fds);
    // Only now may the helper end, so its exit is the last release.
    drop(guard);
}

/// A netfilter netlink message: header, nfgenmsg, attributes.
pub fn message(
    subsys: u16,
    msg_type: u16,
    flags: u16,
    seq: u32,
    family: u8,
    attrs: &[u8],
) -> Vec<u8> {
    let len = NLMSG_HDRLEN + NFGENMSG_LEN + attrs.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&((subsys << 8) | msg_type).to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[family, 0, 0, 0]);
    m.extend_from_slice(attrs);
    m
}

/// Attributes in `buf`: (type without flags, whole attribute, payload).
pub fn attributes(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8], &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return None;
        }
        let whole = &buf[..len];
        let payload = &buf[4..len];
        buf = &buf[align(len).min(buf.len())..];
        Some((kind, whole, payload))
    })
}

/// Messages in one datagram: (type, payload after the netlink header).
pub fn messages(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        let payload = &buf[NLMSG_HDRLEN..len];
        buf = &buf[align(len).min(buf.len())..];
        Some((kind, payload))
    })
}

/// The errno of an NLMSG_ERROR payload (0 = ack).
pub fn error_code(payload: &[u8]) -> i32 {
    payload
        .get(..4)
        .map(|b| -i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0)
}

/// A NUL-terminated string attribute.
pub fn string(payload: &[u8]) -> String {
    let end = payload
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(payload.len());
    String::from_utf8_lossy(&payload[..end]).into_owned()
}
