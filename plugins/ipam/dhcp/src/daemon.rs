//! `dhcp daemon`: listens on the socket (or the one systemd passes), runs
//! DHCP exchanges for the plugin and keeps every lease renewed.
//!
//! Each lease has a maintenance thread: it sleeps until T1, renews with
//! the server that granted the lease, rebinds with any server after T2,
//! and when the lease expires sets the interface down, as the reference
//! does. Every change is written to the state directory before it is
//! acknowledged, and the daemon starts by loading what is there, so a
//! restart neither loses a lease nor the ability to release it.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::FromRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use cni::Error;

use crate::config::client_id;
use crate::exchange::{Client, ExchangeError};
use crate::flags::{self, DaemonFlags};
use crate::lease::{Attachment, Binding, Lease, unix_now};
use crate::protocol::{self, Reply, Request, Verb};
use crate::store::Store;

/// Retry interval after a failed renewal, at most.
const RETRY_MAX: u64 = 60;

struct Held {
    lease: Arc<Mutex<Lease>>,
    stop: mpsc::Sender<()>,
    /// Set with `stop`: ends a renewal in progress.
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct Daemon {
    flags: DaemonFlags,
    store: Store,
    leases: Mutex<HashMap<String, Held>>,
    /// Client ids with an operation in progress: one at a time per id.
    busy: Mutex<HashSet<String>>,
    idle: Condvar,
}

struct Busy<'a> {
    daemon: &'a Daemon,
    id: String,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        lock(&self.daemon.busy).remove(&self.id);
        self.daemon.idle.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn log(msg: impl AsRef<str>) {
    eprintln!("{}", msg.as_ref());
}

fn exchange_err(e: ExchangeError) -> Error {
    match e {
        ExchangeError::NoAnswer(m) => Error::try_again(m),
        ExchangeError::Io(m) => Error::io(m),
        ExchangeError::Interface(m) | ExchangeError::Refused(m) => Error::internal(m),
        ExchangeError::Cancelled => Error::try_again("the request was cancelled"),
    }
}

impl Daemon {
    fn claim(&self, id: &str) -> Busy<'_> {
        let mut busy = lock(&self.busy);
        while busy.contains(id) {
            busy = self.idle.wait(busy).unwrap_or_else(|p| p.into_inner());
        }
        busy.insert(id.to_string());
        Busy {
            daemon: self,
            id: id.to_string(),
        }
    }

    fn client(&self, lease: &Lease, wait: bool) -> Result<Client, ExchangeError> {
        let a = &lease.attachment;
        Client::open(
            &a.netns,
            &a.ifname,
            &a.client_id,
            &a.options,
            self.flags.timing,
            wait,
            a.netns_id,
        )
    }

    fn handle(self: &Arc<Self>, req: Request) -> Result<Option<Binding>, Error> {
        match req.verb {
            Verb::Status => Ok(None),
            Verb::Add => self.add(req).map(Some),
            Verb::Del => {
                let id = client_id(&req.container_id, &req.network, &req.ifname);
                let _busy = self.claim(&id);
                self.forget(&id, true);
                Ok(None)
            }
            Verb::Check => self.check(&req).map(Some),
            Verb::Gc => {
                let gone: Vec<String> = lock(&self.leases)
                    .iter()
                    .filter(|(_, h)| {
                        let l = lock(&h.lease);
                        let a = &l.attachment;
                        a.network == req.network
                            && !req
                                .keep
                                .iter()
                                .any(|k| k.container_id == a.container_id && k.ifname == a.ifname)
                    })
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in gone {
                    let _busy = self.claim(&id);
                    log(format!("{id}: not in the valid attachments, releasing"));
                    self.forget(&id, true);
                }
                Ok(None)
            }
        }
    }

    fn add(self: &Arc<Self>, req: Request) -> Result<Binding, Error> {
        let id = client_id(&req.container_id, &req.network, &req.ifname);
        let _busy = self.claim(&id);
        let netns_path = format!("{}{}", self.flags.host_prefix, req.netns);
        let same_ns = |a: &Attachment| {
            a.netns == netns_path
                && netns::NetNs::open(&a.netns)
                    .ok()
                    .and_then(|ns| crate::exchange::namespace_id(&ns).ok())
                    == a.netns_id
        };
        if let Some(h) = lock(&self.leases).get(&id) {
            let l = lock(&h.lease);
            if !l.binding.expired() && l.attachment.options == req.options && same_ns(&l.attachment)
            {
                return Ok(l.binding.clone());
            }
        }
        // A stale lease of the same id (expired, other options, another
        // namespace) goes.
        self.forget(&id, true);
        if req.netns.is_empty() {
            return Err(Error::invalid_env("CNI_NETNS is required for ADD"));
        }
        let attachment = Attachment {
            client_id: id.clone(),
            container_id: req.container_id,
            network: req.network,
            ifname: req.ifname,
            netns: netns_path,
            netns_id: None,
            options: req.options,
        };
        log(format!("{id}: acquiring lease"));
        let mut lease = Lease {
            attachment,
            binding: Binding {
                address: std::net::Ipv4Addr::UNSPECIFIED,
                prefix: 0,
                server: std::net::Ipv4Addr::UNSPECIFIED,
                routers: Vec::new(),
                classless_routes: Vec::new(),
                static_routes: Vec::new(),
                dns: Vec::new(),
                domain: String::new(),
                bound_at: 0,
                lease_secs: 0,
                renew_secs: 0,
                rebind_secs: 0,
            },
        };
        let binding = {
            let client = self.client(&lease, true).map_err(exchange_err)?;
            let binding = client.acquire().map_err(exchange_err)?;
            lease.binding = binding.clone();
            lease.attachment.netns_id = Some(client.namespace());
            if let Err(e) = self.store.save(&lease) {
                // Nothing may outlive a failed ADD: give the address back.
                let _ = client.release(&binding);
                return Err(Error::io(format!("{id}: write lease: {e}")));
            }
            binding
        };
        log(format!(
            "{id}: lease acquired: {}/{} from {}, expires in {}s",
            binding.address, binding.prefix, binding.server, binding.lease_secs
        ));
        self.hold(lease);
        Ok(binding)
    }

    fn check(&self, req: &Request) -> Result<Binding, Error> {
        let id = client_id(&req.container_id, &req.network, &req.ifname);
        let _busy = self.claim(&id);
        let lease = lock(&self.leases)
            .get(&id)
            .map(|h| lock(&h.lease).clone())
            .ok_or_else(|| Error::internal(format!("dhcp: no lease held for {id}")))?;
        if lease.binding.expired() {
            return Err(Error::internal(format!(
                "dhcp: the lease of {id} on {} expired",
                lease.binding.address
            )));
        }
        let a = &lease.attachment;
        let ns = netns::NetNs::open(&a.netns)
            .map_err(|e| Error::new(cni::code::INVALID_NETNS, e.to_string()))?;
        let id = crate::exchange::namespace_id(&ns).map_err(exchange_err)?;
        if a.netns_id.is_some_and(|want| want != id) {
            return Err(Error::new(
                cni::code::INVALID_NETNS,
                format!("dhcp: {} is no longer the namespace of the lease", a.netns),
            ));
        }
        let nl = link::Netlink::in_netns(&ns).map_err(|e| Error::internal(e.to_string()))?;
        let l = nl
            .link_by_name(&a.ifname)
            .map_err(|e| Error::internal(e.to_string()))?
            .ok_or_else(|| {
                Error::internal(format!("dhcp: {} is gone from {}", a.ifname, a.netns))
            })?;
        let addrs = nl
            .addresses(Some(l.index))
            .map_err(|e| Error::internal(e.to_string()))?;
        let held = std::net::IpAddr::V4(lease.binding.address);
        if !addrs.iter().any(|ad| ad.network.ip() == held) {
            return Err(Error::internal(format!(
                "dhcp: leased address {held} is not on {} in {}",
                a.ifname, a.netns
            )));
        }
        Ok(lease.binding)
    }

    /// Start maintaining `lease`.
    fn hold(self: &Arc<Self>, lease: Lease) {
        let id = lease.attachment.client_id.clone();
        let shared = Arc::new(Mutex::new(lease));
        let (tx, rx) = mpsc::channel();
        let stopping = Arc::new(AtomicBool::new(false));
        let daemon = Arc::clone(self);
        let l = Arc::clone(&shared);
        let flag = Arc::clone(&stopping);
        let thread = std::thread::Builder::new()
            .name("lease".into())
            .spawn(move || daemon.maintain(&l, &rx, &flag))
            .map_err(|e| log(format!("{id}: cannot start lease maintenance: {e}")))
            .ok();
        lock(&self.leases).insert(
            id,
            Held {
                lease: shared,
                stop: tx,
                stopping,
                thread,
            },
        );
    }

    /// Stop maintaining `id`, release it (if `release`) and delete its
    /// record. A namespace that is gone cannot send the release: the lease
    /// is forgotten all the same and the server lets it expire.
    fn forget(&self, id: &str, release: bool) {
        let Some(mut held) = lock(&self.leases).remove(id) else {
            return;
        };
        held.stopping.store(true, Ordering::Relaxed);
        let _ = held.stop.send(());
        if let Some(t) = held.thread.take() {
            let _ = t.join();
        }
        let lease = lock(&held.lease).clone();
        if release {
            match self
                .client(&lease, false)
                .and_then(|c| c.release(&lease.binding))
            {
                Ok(()) => log(format!("{id}: released {}", lease.binding.address)),
                Err(e) => log(format!("{id}: failed to release DHCP lease: {e}")),
            }
        }
        if let Err(e) = self.store.remove(id) {
            log(format!("{id}: remove lease record: {e}"));
        }
    }

    fn maintain(
        &self,
        shared: &Mutex<Lease>,
        stop: &mpsc::Receiver<()>,
        stopping: &Arc<AtomicBool>,
    ) {
        loop {
            let lease = lock(shared).clone();
            let id = &lease.attachment.client_id;
            let b = &lease.binding;
            let now = unix_now();
            if now >= b.expires_at() {
                log(format!("{id}: lease expired, bringing interface DOWN"));
                self.link_down(&lease.attachment);
                return;
            }
            let mut wait = b.renew_at().saturating_sub(now);
            if now >= b.renew_at() {
                let rebinding = now >= b.rebind_at();
                let outcome = self
                    .client(&lease, false)
                    .and_then(|c| c.cancelled_by(Arc::clone(stopping)).extend(b, rebinding))
                    .and_then(|nb| {
                        if nb.address == b.address {
                            Ok(nb)
                        } else {
                            Err(ExchangeError::Refused(format!(
                                "server offered {} instead of {}",
                                nb.address, b.address
                            )))
                        }
                    });
                match outcome {
                    Ok(nb) => {
                        log(format!(
                            "{id}: lease renewed, expires in {}s",
                            nb.lease_secs
                        ));
                        let mut l = lock(shared);
                        l.binding = nb;
                        if let Err(e) = self.store.save(&l) {
                            log(format!("{id}: write lease: {e}"));
                        }
                        wait = l.binding.renew_secs.into();
                    }
                    Err(ExchangeError::Cancelled) => return,
                    Err(ExchangeError::Interface(e)) => {
                        log(format!(
                            "{id}: {e}; interface no longer exists, terminating lease maintenance"
                        ));
                        return;
                    }
                    Err(e) => {
                        log(format!("{id}: {e}"));
                        let next = if rebinding {
                            b.expires_at()
                        } else {
                            b.rebind_at()
                        };
                        wait = (next.saturating_sub(unix_now()) / 2).clamp(1, RETRY_MAX);
                    }
                }
            }
            match stop.recv_timeout(Duration::from_secs(wait.max(1))) {
                Err(RecvTimeoutError::Timeout) => continue,
                _ => return,
            }
        }
    }

    fn link_down(&self, a: &Attachment) {
        let result = netns::NetNs::open(&a.netns)
            .map_err(|e| e.to_string())
            .and_then(|ns| link::Netlink::in_netns(&ns).map_err(|e| e.to_string()))
            .and_then(|nl| {
                let l = nl
                    .link_by_name(&a.ifname)
                    .map_err(|e| e.to_string())?
                    .ok_or("link not found")?;
                nl.set_down(l.index).map_err(|e| e.to_string())
            });
        if let Err(e) = result {
            log(format!(
                "{}: failed to bring {} interface DOWN: {e}",
                a.client_id, a.ifname
            ));
        }
    }
}

fn serve(daemon: &Arc<Daemon>, mut stream: UnixStream) {
    // A client that connects and sends nothing must not hold a thread.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let reply = match protocol::read_message::<Request>(&mut stream) {
        Ok(req) => match daemon.handle(req) {
            Ok(b) => Reply::Ok(b),
            Err(e) => Reply::Error(e),
        },
        Err(e) => Reply::Error(Error::decoding(format!("bad request: {e}"))),
    };
    if let Err(e) = protocol::write_message(&mut stream, &reply) {
        log(format!("write reply: {e}"));
    }
}

/// The socket systemd passed (`LISTEN_PID`/`LISTEN_FDS`, first fd 3), or
/// one bound at `path` with mode 0600.
fn listener(path: &str) -> Result<(UnixListener, bool), String> {
    let ours = std::env::var("LISTEN_PID").ok() == Some(std::process::id().to_string());
    let fds: usize = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: plain environment edits before any other thread exists.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    if ours && fds == 1 {
        // SAFETY: systemd hands fd 3 to this process as a listening socket.
        return Ok((unsafe { UnixListener::from_raw_fd(3) }, true));
    }
    if ours && fds > 1 {
        return Err(format!(
            "Too many ({fds}) FDs passed through socket activation"
        ));
    }
    let p = Path::new(path);
    if let Some(dir) = p.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    if p.exists() {
        if UnixStream::connect(p).is_ok() {
            return Err(format!("another daemon is listening on {path}"));
        }
        // A socket left by a daemon that died.
        std::fs::remove_file(p).map_err(|e| format!("remove stale {path}: {e}"))?;
    }
    let l = UnixListener::bind(p).map_err(|e| format!("listen on {path}: {e}"))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod {path}: {e}"))?;
    Ok((l, false))
}

fn block_signals() -> io::Result<libc::sigset_t> {
    // SAFETY: sigset manipulation on a local, then masking this thread;
    // threads spawned afterwards inherit the mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(set)
    }
}

/// `dhcp daemon [flags]`; returns the exit status.
pub fn main(args: &[String]) -> i32 {
    let flags = match flags::parse(args) {
        Ok(f) => f,
        // -h prints the usage and succeeds, as Go's flag package does.
        Err(e) if e.is_empty() => {
            eprint!("{}", flags::USAGE);
            return 0;
        }
        Err(e) => {
            eprintln!("{e}");
            eprint!("{}", flags::USAGE);
            return 2;
        }
    };
    match run(flags) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

fn run(flags: DaemonFlags) -> Result<(), String> {
    if let Some(pidfile) = &flags.pidfile {
        if !pidfile.is_absolute() {
            return Err(format!(
                "Error writing pidfile {:?}: path not absolute",
                pidfile.display().to_string()
            ));
        }
        std::fs::write(pidfile, std::process::id().to_string())
            .map_err(|e| format!("Error writing pidfile {:?}: {e}", pidfile.display()))?;
    }
    let socket_path = format!("{}{}", flags.host_prefix, flags.socket_path);
    let (listener, activated) =
        listener(&socket_path).map_err(|e| format!("Error getting listener: {e}"))?;
    let sigs = block_signals().map_err(|e| format!("block signals: {e}"))?;
    let store = Store::open(&flags.state_dir)
        .map_err(|e| format!("state directory {}: {e}", flags.state_dir.display()))?;
    let (saved, errors) = store.load_all();
    for e in errors {
        log(format!("skipping unreadable lease record {e}"));
    }
    let pidfile = flags.pidfile.clone();
    let daemon = Arc::new(Daemon {
        flags,
        store,
        leases: Mutex::new(HashMap::new()),
        busy: Mutex::new(HashSet::new()),
        idle: Condvar::new(),
    });
    for lease in saved {
        log(format!(
            "{}: resuming lease of {}",
            lease.attachment.client_id, lease.binding.address
        ));
        daemon.hold(lease);
    }
    let d = Arc::clone(&daemon);
    std::thread::Builder::new()
        .name("accept".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(stream) => {
                        let d = Arc::clone(&d);
                        if let Err(e) = std::thread::Builder::new()
                            .name("request".into())
                            .spawn(move || serve(&d, stream))
                        {
                            log(format!("cannot serve a request: {e}"));
                        }
                    }
                    Err(e) => log(format!("accept: {e}")),
                }
            }
        })
        .map_err(|e| format!("start listener: {e}"))?;
    // Leases stay on disk at shutdown (never released): the next daemon
    // takes them over.
    let mut sig: libc::c_int = 0;
    // SAFETY: `sigs` is an initialised set, `sig` a valid out pointer.
    unsafe { libc::sigwait(&sigs, &mut sig) };
    if !activated {
        let _ = std::fs::remove_file(&socket_path);
    }
    if let Some(p) = pidfile {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}
