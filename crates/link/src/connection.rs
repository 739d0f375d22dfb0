//! One rtnetlink connection bound to one network namespace.

use futures::channel::mpsc::UnboundedReceiver;
use netlink_packet_core::NetlinkMessage;
use netlink_packet_route::RouteNetlinkMessage;
use netns::NetNs;
use rtnetlink::Handle;
use rtnetlink::sys::{AsyncSocket, SocketAddr};
use tokio::runtime::Runtime;

use crate::error::{Error, Result};

/// Unsolicited messages (multicast notifications) of a connection.
pub(crate) type Notifications =
    UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>;

/// A netlink connection to the kernel in one network namespace, usable from
/// any thread of this process.
pub struct Netlink {
    rt: Runtime,
    handle: Handle,
    /// Kept open so later sockets (link watchers) can be made in the same
    /// namespace even if its name is removed meanwhile.
    ns: NetNs,
    /// The path the caller named the namespace by, for messages.
    ns_path: String,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink")
            .field("ns", &self.ns_path)
            .finish()
    }
}

impl Netlink {
    /// A connection in the calling thread's network namespace.
    pub fn current() -> Result<Self> {
        Self::in_netns(&NetNs::current()?)
    }

    /// A connection in namespace `ns`. Only the socket's creation happens
    /// inside `ns` (on a throwaway thread); the connection is then driven
    /// from whichever thread calls its methods.
    pub fn in_netns(ns: &NetNs) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|source| Error::Socket {
                ns: ns.path().display().to_string(),
                source,
            })?;
        let ns_path = ns.path().display().to_string();
        // Our own handle on the namespace, independent of the caller's.
        let own = NetNs::open(format!("/proc/self/fd/{}", ns.raw_fd()))?;
        let (handle, _) = open_socket(&rt, &own, &ns_path, 0)?;
        Ok(Netlink {
            rt,
            handle,
            ns: own,
            ns_path,
        })
    }

    /// The namespace this connection talks to.
    pub fn netns(&self) -> &NetNs {
        &self.ns
    }

    /// The path the namespace was named by when the connection was made.
    pub fn netns_path(&self) -> &str {
        &self.ns_path
    }

    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    pub(crate) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// A second socket in the same namespace, subscribed to the multicast
    /// `groups` bitmask (`RTMGRP_*`), for waiting on notifications.
    pub(crate) fn subscribe(&self, groups: u32) -> Result<Notifications> {
        let (_, notifications) = open_socket(&self.rt, &self.ns, &self.ns_path, groups)?;
        Ok(notifications)
    }
}

/// Create a netlink socket inside `ns`, register it with `rt`'s reactor and
/// start driving it on `rt`.
fn open_socket(
    rt: &Runtime,
    ns: &NetNs,
    ns_path: &str,
    groups: u32,
) -> Result<(Handle, Notifications)> {
    let socket_err = |source: std::io::Error| Error::Socket {
        ns: ns_path.to_string(),
        source,
    };
    let rt_handle = rt.handle().clone();
    let make = move || -> std::io::Result<_> {
        // TokioSocket registers with the reactor when it is constructed, so
        // the runtime must be entered on the thread that creates it.
        let _entered = rt_handle.enter();
        let (mut conn, handle, notifications) = rtnetlink::new_connection()?;
        // Without strict checking the kernel ignores the ifindex filter of
        // address and route dumps and sends every entry of the namespace:
        // on a host with hundreds of container veths (each with its IPv6
        // link-local address) that made looking at the bridge's addresses
        // cost O(containers). Kernels before 4.20 lack the option; the
        // callers filter again, so failing to set it only costs time.
        let _ = conn
            .socket_mut()
            .socket_mut()
            .set_netlink_get_strict_chk(true);
        if groups != 0 {
            conn.socket_mut()
                .socket_mut()
                .bind(&SocketAddr::new(0, groups))?;
        }
        Ok((conn, handle, notifications))
    };
    let here = NetNs::current()?;
    let made = if here.same_as(ns) {
        make()
    } else {
        ns.run(make)?
    };
    let (conn, handle, notifications) = made.map_err(socket_err)?;
    rt.spawn(conn);
    Ok((handle, notifications))
}
