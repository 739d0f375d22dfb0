//! The floor row: the kernel work of the chain's ADD and DEL, done by this
//! one already-running process over netlink — no exec, no CNI, no result
//! cache, no IPAM files. What is left of a verb's time once every process
//! start, configuration parse and file is gone.
//!
//! ADD: a veth pair with one end created in a fresh container namespace,
//! the host end attached to the bridge; the container end's address, up,
//! default route; the host end up; masquerade and one host port as nf_tables
//! transactions (the nftables backend's netlink writer, as the plugins use
//! it). DEL: the rules torn down by netlink, then the container end deleted,
//! timed twice — until the blocking delete call returns, and until the
//! kernel publishes the removal (the RTM_DELLINK notification of the host
//! end, read from a socket subscribed to the link group before the request).

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use link::{BridgeOptions, Netlink, Route, VethOptions};
use netfilter::{Attachment, Backend, HostPorts, IpNetwork, PortMapping, Protocol, Snat};
use serde_json::{Value, json};

use crate::Fallible;
// The lab's network and bridge: with containers attached by the plugins
// first, the floor's own container joins the same bridge and the same
// nf_tables structures as theirs.
use crate::lab::{BRIDGE, Chain, Lab, NETWORK, Variant};
use crate::stats::median_ms;

const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 91, 0, 1);
const RTMGRP_LINK: u32 = 1;
const RTM_DELLINK: u16 = 17;
/// How long to wait for the removal notification before calling it lost.
const NOTIFY_BOUND: Duration = Duration::from_secs(2);

fn err(what: &str) -> impl Fn(link::Error) -> String + '_ {
    move |e| format!("floor: {what}: {e}")
}

fn nferr(what: &str) -> impl Fn(netfilter::Error) -> String + '_ {
    move |e| format!("floor: {what}: {e}")
}

/// A NETLINK_ROUTE socket of the calling thread's namespace, bound to the
/// multicast `groups`, with a receive timeout.
fn route_socket(groups: u32) -> Fallible<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(format!(
            "floor: netlink socket: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_nl is valid; the fields are set below.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = groups;
    let tv = libc::timeval {
        // A few seconds fit any time_t (whose alias musl deprecates).
        tv_sec: NOTIFY_BOUND.as_secs().try_into().unwrap_or(2),
        tv_usec: 0,
    };
    // SAFETY: the pointers refer to live locals of the sizes passed.
    let ok = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        ) == 0
            && libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            ) == 0
    };
    if !ok {
        return Err(format!(
            "floor: subscribe to link notifications: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(fd)
}

/// Delete link `index` with one RTM_DELLINK request on `fd` (a socket of
/// the link's namespace) and wait for the kernel's acknowledgement: the
/// plain blocking call, whatever the link crate's own delete does.
fn delete_link_blocking(fd: &OwnedFd, index: u32) -> Fallible<()> {
    let mut req = [0u8; 32];
    req[0..4].copy_from_slice(&32u32.to_ne_bytes());
    req[4..6].copy_from_slice(&RTM_DELLINK.to_ne_bytes());
    // NLM_F_REQUEST | NLM_F_ACK
    req[6..8].copy_from_slice(&5u16.to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    let index = i32::try_from(index).map_err(|e| format!("floor: index {index}: {e}"))?;
    req[20..24].copy_from_slice(&index.to_ne_bytes());
    // SAFETY: req is a live buffer of req.len() bytes.
    let sent = unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if sent != 32 {
        return Err(format!(
            "floor: send RTM_DELLINK: {}",
            std::io::Error::last_os_error()
        ));
    }
    let mut buf = [0u8; 4096];
    // SAFETY: buf is a live buffer of buf.len() bytes.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 20 {
        return Err(format!(
            "floor: RTM_DELLINK acknowledgement: {}",
            std::io::Error::last_os_error()
        ));
    }
    // NLMSG_ERROR (2), then the negative errno (0 = success).
    let kind = u16::from_ne_bytes([buf[4], buf[5]]);
    let code = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
    if kind != 2 || code != 0 {
        return Err(format!(
            "floor: RTM_DELLINK of index {index}: {}",
            std::io::Error::from_raw_os_error(-code)
        ));
    }
    Ok(())
}

/// Wait for a delete request started by a round: how long it blocked.
fn join_delete(handle: std::thread::JoinHandle<Fallible<Duration>>) -> Fallible<Duration> {
    handle
        .join()
        .map_err(|_| "floor: the delete thread panicked".to_string())?
}

/// Read notifications until the RTM_DELLINK of `index`: when it was read.
fn wait_dellink(fd: &OwnedFd, index: u32) -> Fallible<Instant> {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: buf is a live buffer of buf.len() bytes.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let at = Instant::now();
        if n < 0 {
            return Err(format!(
                "floor: no RTM_DELLINK for index {index}: {}",
                std::io::Error::last_os_error()
            ));
        }
        let mut rest = &buf[..n as usize];
        // struct nlmsghdr (16 bytes), then struct ifinfomsg: ifi_index at 4.
        while rest.len() >= 16 + 8 {
            let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let kind = u16::from_ne_bytes([rest[4], rest[5]]);
            let ifindex = i32::from_ne_bytes([rest[20], rest[21], rest[22], rest[23]]);
            if kind == RTM_DELLINK && u32::try_from(ifindex).ok() == Some(index) {
                return Ok(at);
            }
            let step = (len + 3) & !3;
            if len < 16 || step > rest.len() {
                break;
            }
            rest = &rest[step..];
        }
    }
}

/// One container's rules: masquerade and one TCP host port.
fn rules<'a>(id: &'a str, ip: IpNetwork, mappings: &'a [PortMapping]) -> HostPorts<'a> {
    HostPorts {
        network: NETWORK,
        container_id: id,
        ipv4: Some(ip),
        ipv6: None,
        mappings,
        snat: Snat::MarkBit(13),
        masq_all: false,
        conditions_v4: &[],
        conditions_v6: &[],
    }
}

/// Medians over `reps` rounds (after one warm-up) of the floor ADD, the
/// floor DEL to published removal and to the blocking call's return, and
/// the two removal times on their own — on a node with `attached`
/// containers already on the bridge (attached by our plugins, nftables
/// backend), so the kernel's own growth with N can be told from ours.
pub fn measure(ours: &Path, reps: usize, attached: usize) -> Fallible<Value> {
    // On a thread of its own: the netfilter crate keeps one netlink socket
    // per thread, which belongs to the namespace the thread was in when it
    // first used it, and a lab is entered with setns on the calling thread.
    // On the bench's main thread the floor at N wrote its rules into the
    // namespace of the floor at 0, not beside the N containers' rules.
    std::thread::scope(|scope| {
        scope
            .spawn(|| measure_here(ours, reps, attached))
            .join()
            .unwrap_or_else(|_| Err("floor: the measuring thread panicked".into()))
    })
}

fn measure_here(ours: &Path, reps: usize, attached: usize) -> Fallible<Value> {
    let mut lab = Lab::new(Variant {
        implementation: "ours",
        backend: "nftables",
        plugin_dir: ours.to_path_buf(),
        chain: Chain::Bench,
    })?;
    lab.attach_until(attached)?;
    lab.enter()?;
    let host = Netlink::current().map_err(err("host connection"))?;
    let bridge = host
        .ensure_bridge(&BridgeOptions {
            name: BRIDGE.into(),
            ..Default::default()
        })
        .map_err(err("bridge"))?;
    let gw = IpNetwork::new(IpAddr::V4(GATEWAY), 24).map_err(|e| e.to_string())?;
    host.add_address(bridge.index, gw)
        .map_err(err("bridge address"))?;
    let nf = netfilter::netfilter(Backend::Nftables);
    let mappings = [PortMapping {
        host_port: 8080,
        container_port: 80,
        protocol: Protocol::Tcp,
        host_ip: None,
    }];
    let (mut add, mut del_pub, mut del_blk, mut removal_pub, mut removal_blk, mut rules_del) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    // ADD's parts: veth pair, container side, masquerade, host port.
    let mut parts: [Vec<Duration>; 4] = Default::default();
    // The previous round's blocking delete, still running.
    let mut pending: Option<std::thread::JoinHandle<Fallible<Duration>>> = None;
    for round in 0..=reps {
        crate::check_interrupted()?;
        lab.enter()?;
        let ns = netns::TempNetns::new("cni-bench-floor").map_err(|e| e.to_string())?;
        let cont_ns = ns.open().map_err(|e| e.to_string())?;
        let id = format!("floor{round}");
        let ip = IpNetwork::new(IpAddr::V4(Ipv4Addr::new(10, 91, 0, 10)), 24)
            .map_err(|e| e.to_string())?;
        let att = Attachment {
            network: NETWORK,
            container_id: &id,
            ifname: "eth0",
        };
        // ADD
        let t = Instant::now();
        let pair = host
            .create_veth(&VethOptions {
                container_name: "eth0",
                container_ns: &cont_ns,
                host_name: None,
                bridge_index: Some(bridge.index),
                mtu: None,
                container_mac: None,
            })
            .map_err(err("veth"))?;
        let t_veth = t.elapsed();
        let cont = Netlink::in_netns(&cont_ns).map_err(err("container connection"))?;
        let eth0 = cont.require_link("eth0").map_err(err("eth0"))?;
        cont.add_address(eth0.index, ip)
            .map_err(err("container address"))?;
        cont.set_up(eth0.index).map_err(err("eth0 up"))?;
        let default =
            IpNetwork::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).map_err(|e| e.to_string())?;
        let mut route = Route::to(default);
        route.gateway = Some(IpAddr::V4(GATEWAY));
        cont.add_route(&route).map_err(err("default route"))?;
        let t_cont = t.elapsed();
        nf.setup_masquerade(&att, &[ip])
            .map_err(nferr("masquerade"))?;
        let t_masq = t.elapsed();
        nf.add_hostports(&rules(&id, ip, &mappings))
            .map_err(nferr("host port"))?;
        let a = t.elapsed();
        // DEL
        let t = Instant::now();
        nf.teardown_masquerade(&att)
            .map_err(nferr("masquerade teardown"))?;
        nf.del_hostports(NETWORK, &id)
            .map_err(nferr("host port teardown"))?;
        let r = t.elapsed();
        let requester = cont_ns
            .run(|| route_socket(0))
            .map_err(|e| format!("floor: enter the container namespace: {e}"))??;
        let monitor = route_socket(RTMGRP_LINK)?;
        let host_index = pair.host.index;
        // As the plugins do: the blocking request runs beside us, DEL ends
        // at the published removal, and the next round starts while the
        // kernel still finishes this one (the request is joined after the
        // next round's ADD), so the kernel's deferred work lands in the
        // same places as in the chain's rounds.
        let eth0_index = eth0.index;
        let requested = Instant::now();
        let deleter = std::thread::spawn(move || {
            delete_link_blocking(&requester, eth0_index).map(|()| requested.elapsed())
        });
        let published = wait_dellink(&monitor, host_index)?.saturating_duration_since(requested);
        drop(cont);
        drop(ns);
        let blocking = match pending.replace(deleter) {
            Some(previous) => join_delete(previous)?,
            None => Duration::ZERO,
        };
        if round == 0 {
            continue;
        }
        add.push(a);
        for (v, d) in parts
            .iter_mut()
            .zip([t_veth, t_cont - t_veth, t_masq - t_cont, a - t_masq])
        {
            v.push(d);
        }
        rules_del.push(r);
        removal_pub.push(published);
        // The previous round's request (its rules teardown is not known
        // here: this round's stands in for it).
        if round > 1 {
            removal_blk.push(blocking);
            del_blk.push(r + blocking);
        }
        del_pub.push(r + published);
    }
    if let Some(last) = pending.take() {
        let blocking = join_delete(last)?;
        removal_blk.push(blocking);
        del_blk.push(rules_del.last().copied().unwrap_or_default() + blocking);
    }
    drop(host);
    drop(lab);
    let add_del: Vec<Duration> = add.iter().zip(&del_pub).map(|(a, d)| *a + *d).collect();
    Ok(json!({
        "reps": reps,
        "attached": attached,
        "add_ms": median_ms(&add),
        "del_ms": median_ms(&del_pub),
        "del_blocking_ms": median_ms(&del_blk),
        "add_del_ms": median_ms(&add_del),
        "add_parts_ms": {
            "veth pair": median_ms(&parts[0]),
            "container address, up, route": median_ms(&parts[1]),
            "masquerade": median_ms(&parts[2]),
            "host port": median_ms(&parts[3]),
        },
        "rules_teardown_ms": median_ms(&rules_del),
        "veth_removal_published_ms": median_ms(&removal_pub),
        "veth_removal_blocking_ms": median_ms(&removal_blk),
    }))
}
