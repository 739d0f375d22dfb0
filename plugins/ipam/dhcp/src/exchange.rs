//! The DHCPv4 client: DISCOVER/OFFER/REQUEST/ACK, renew (unicast to the
//! server), rebind (broadcast) and release, over a [`PacketSocket`] on the
//! container's interface.

use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dhcproto::v4::{
    DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode, UnknownOption,
};
use dhcproto::{Decodable, Encodable};
use netns::NetNs;

use crate::config::LeaseOptions;
use crate::lease::{Binding, ClasslessRoute, DEFAULT_LEASE_SECS, unix_now};
use crate::packet::{PacketSocket, resend_delays};

/// How often a waiting exchange looks at its cancel flag.
const CANCEL_POLL: Duration = Duration::from_millis(200);

/// How long ADD waits for the interface to appear in the namespace.
const LINK_WAIT: Duration = Duration::from_secs(5);

/// The daemon's client timing flags.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Longest wait for one reply (`-timeout`).
    pub timeout: Duration,
    /// Longest delay between resends (`-resendmax`).
    pub resend_max: Duration,
    /// No more resends after this (`-resendtimeout`).
    pub resend_timeout: Duration,
    /// Ask the server to broadcast its replies (`-broadcast`).
    pub broadcast: bool,
}

#[derive(Debug)]
pub enum ExchangeError {
    /// The namespace or interface is gone or unusable.
    Interface(String),
    /// The server never answered within the resend timeout.
    NoAnswer(String),
    /// The server refused (DHCPNAK) or sent something unusable.
    Refused(String),
    Io(String),
    /// The lease is being released (DEL) while the exchange ran.
    Cancelled,
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExchangeError::Interface(m)
            | ExchangeError::NoAnswer(m)
            | ExchangeError::Refused(m)
            | ExchangeError::Io(m) => f.write_str(m),
            ExchangeError::Cancelled => f.write_str("cancelled"),
        }
    }
}

type Result<T> = std::result::Result<T, ExchangeError>;

/// A client on one interface for one client id.
pub struct Client {
    sock: PacketSocket,
    mac: [u8; 6],
    ifname: String,
    client_id: String,
    options: LeaseOptions,
    timing: Timing,
    cancel: Option<Arc<AtomicBool>>,
    ns_id: NamespaceId,
}

/// A namespace's identity: the device and inode of its nsfs file.
pub type NamespaceId = (u64, u64);

pub fn namespace_id(ns: &NetNs) -> Result<NamespaceId> {
    // SAFETY: fstat on a descriptor `ns` keeps open, into a local.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(ns.raw_fd(), &mut st) } != 0 {
        return Err(ExchangeError::Interface(format!(
            "stat {}: {}",
            ns.path().display(),
            std::io::Error::last_os_error()
        )));
    }
    Ok((st.st_dev, st.st_ino))
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: writes at most 4 bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 4, 0) };
    if n != 4 {
        // Any xid works; uniqueness only helps matching replies.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        return t ^ std::process::id();
    }
    u32::from_ne_bytes(b)
}

impl Client {
    /// Open the client inside `netns` on `ifname`, bringing the link up
    /// first if it is down (as the reference does). `wait`: whether to
    /// give the interface a moment to appear (ADD only).
    pub fn open(
        netns: &str,
        ifname: &str,
        client_id: &str,
        options: &LeaseOptions,
        timing: Timing,
        wait: bool,
        expect_ns: Option<NamespaceId>,
    ) -> Result<Self> {
        let ns = NetNs::open(netns)
            .map_err(|e| ExchangeError::Interface(format!("open netns {netns}: {e}")))?;
        let ns_id = namespace_id(&ns)?;
        if let Some(want) = expect_ns
            && want != ns_id
        {
            // A /proc/<pid>/ns/net path after the process is gone (or a
            // reboot) may name somebody else's namespace.
            return Err(ExchangeError::Interface(format!(
                "{netns} is no longer the namespace the lease was taken in"
            )));
        }
        let nl = link::Netlink::in_netns(&ns)
            .map_err(|e| ExchangeError::Interface(format!("netlink in {netns}: {e}")))?;
        // A main plugin may run IPAM while it is still creating the
        // interface (ours does, in parallel with the veth): wait a moment.
        let wait_end = Instant::now() + if wait { LINK_WAIT } else { Duration::ZERO };
        let l = loop {
            let found = nl.link_by_name(ifname).map_err(|e| {
                ExchangeError::Interface(format!("error looking up {ifname:?}: {e}"))
            })?;
            match found {
                Some(l) => break l,
                None if Instant::now() < wait_end => std::thread::sleep(Duration::from_millis(20)),
                None => {
                    return Err(ExchangeError::Interface(format!(
                        "error looking up {ifname:?}: Link not found in {netns}"
                    )));
                }
            }
        };
        if !l.up {
            nl.set_up(l.index)
                .map_err(|e| ExchangeError::Interface(format!("set {ifname} up: {e}")))?;
        }
        let mac = l
            .mac
            .map(|m| m.octets())
            .ok_or_else(|| ExchangeError::Interface(format!("{ifname} has no MAC address")))?;
        let index = l.index;
        let sock = ns
            .run(move || PacketSocket::open(index))
            .map_err(|e| ExchangeError::Interface(format!("enter {netns}: {e}")))?
            .map_err(|e| ExchangeError::Io(format!("packet socket on {ifname}: {e}")))?;
        Ok(Client {
            sock,
            mac,
            ifname: ifname.to_string(),
            client_id: client_id.to_string(),
            options: options.clone(),
            timing,
            cancel: None,
            ns_id,
        })
    }

    /// The namespace this client works in.
    pub fn namespace(&self) -> NamespaceId {
        self.ns_id
    }

    /// Give up any exchange as soon as `flag` is set.
    pub fn cancelled_by(mut self, flag: Arc<AtomicBool>) -> Self {
        self.cancel = Some(flag);
        self
    }

    fn message(&self, kind: MessageType, xid: u32, ciaddr: Ipv4Addr) -> Message {
        let mut m = Message::default();
        m.set_opcode(Opcode::BootRequest)
            .set_htype(HType::Eth)
            .set_xid(xid)
            .set_ciaddr(ciaddr)
            .set_chaddr(&self.mac);
        // A client that has its address receives unicast; before that the
        // server may need to broadcast (`-broadcast`).
        if self.timing.broadcast && ciaddr.is_unspecified() {
            m.set_flags(Flags::default().set_broadcast());
        }
        let opts = m.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        let mut id = vec![0u8];
        id.extend_from_slice(self.client_id.as_bytes());
        opts.insert(DhcpOption::ClientIdentifier(id));
        if kind != MessageType::Release && !self.options.request.is_empty() {
            opts.insert(DhcpOption::ParameterRequestList(
                self.options
                    .request
                    .iter()
                    .map(|c| OptionCode::from(*c))
                    .collect(),
            ));
        }
        // A release names the lease by the same client id, provided or not.
        for o in &self.options.provide {
            if kind != MessageType::Release || o.code == u8::from(OptionCode::ClientIdentifier) {
                opts.insert(DhcpOption::Unknown(UnknownOption::new(
                    OptionCode::from(o.code),
                    o.value.clone(),
                )));
            }
        }
        m
    }

    /// Send `msg` (resending with backoff) until a reply with its xid
    /// that `accept` takes arrives, or the resend timeout passes.
    fn transact(
        &self,
        msg: &Message,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        what: &str,
        accept: &dyn Fn(&Message) -> bool,
    ) -> Result<Message> {
        let bytes = msg
            .to_vec()
            .map_err(|e| ExchangeError::Io(format!("encode {what}: {e}")))?;
        let end = Instant::now() + self.timing.resend_timeout;
        for delay in resend_delays(self.timing.resend_max) {
            let now = Instant::now();
            if now >= end {
                break;
            }
            self.sock
                .send(src, dst, &bytes)
                .map_err(|e| ExchangeError::Io(format!("send {what} on {}: {e}", self.ifname)))?;
            let wait_end = (now + delay.min(self.timing.timeout)).min(end);
            loop {
                if self
                    .cancel
                    .as_ref()
                    .is_some_and(|c| c.load(Ordering::Relaxed))
                {
                    return Err(ExchangeError::Cancelled);
                }
                let now = Instant::now();
                if now >= wait_end {
                    break;
                }
                // Short slices, so that a cancelled exchange stops soon.
                let slice_end = (now + CANCEL_POLL).min(wait_end);
                let Some(r) = self
                    .sock
                    .recv_until(slice_end)
                    .map_err(|e| ExchangeError::Io(format!("receive on {}: {e}", self.ifname)))?
                else {
                    continue;
                };
                let Ok(reply) = Message::from_bytes(&r.payload) else {
                    continue;
                };
                if reply.opcode() == Opcode::BootReply
                    && reply.xid() == msg.xid()
                    && reply.chaddr().get(..6) == Some(&self.mac[..])
                    && accept(&reply)
                {
                    return Ok(reply);
                }
            }
        }
        Err(ExchangeError::NoAnswer(format!(
            "no DHCP answer to {what} on {} within {:?}",
            self.ifname, self.timing.resend_timeout
        )))
    }

    /// DISCOVER → OFFER → REQUEST → ACK. A NAK starts over.
    pub fn acquire(&self) -> Result<Binding> {
        let mut last = None;
        for _ in 0..3 {
            let xid = random_u32();
            let discover = self.message(MessageType::Discover, xid, Ipv4Addr::UNSPECIFIED);
            let offer = self.transact(
                &discover,
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::BROADCAST,
                "DHCPDISCOVER",
                &|m| m.opts().has_msg_type(MessageType::Offer),
            )?;
            let server = match offer.opts().get(OptionCode::ServerIdentifier) {
                Some(DhcpOption::ServerIdentifier(s)) => *s,
                _ => return Err(ExchangeError::Refused("DHCPOFFER without server id".into())),
            };
            let mut request = self.message(MessageType::Request, xid, Ipv4Addr::UNSPECIFIED);
            request
                .opts_mut()
                .insert(DhcpOption::ServerIdentifier(server));
            request
                .opts_mut()
                .insert(DhcpOption::RequestedIpAddress(offer.yiaddr()));
            let reply = self.transact(
                &request,
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::BROADCAST,
                "DHCPREQUEST",
                &|m| {
                    m.opts().has_msg_type(MessageType::Ack)
                        || m.opts().has_msg_type(MessageType::Nak)
                },
            )?;
            match binding_from_ack(&reply) {
                Ok(b) => return Ok(b),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| ExchangeError::Refused("no lease".into())))
    }

    /// RENEWING (unicast to the server that granted the lease) or
    /// REBINDING (broadcast to any server).
    pub fn extend(&self, current: &Binding, rebinding: bool) -> Result<Binding> {
        let xid = random_u32();
        let request = self.message(MessageType::Request, xid, current.address);
        let dst = if rebinding {
            Ipv4Addr::BROADCAST
        } else {
            current.server
        };
        let what = if rebinding {
            "DHCPREQUEST (rebinding)"
        } else {
            "DHCPREQUEST (renewing)"
        };
        let reply = self.transact(&request, current.address, dst, what, &|m| {
            m.opts().has_msg_type(MessageType::Ack) || m.opts().has_msg_type(MessageType::Nak)
        })?;
        binding_from_ack(&reply)
    }

    /// DHCPRELEASE: sent once, no answer expected (RFC 2131 4.4.6).
    pub fn release(&self, current: &Binding) -> Result<()> {
        let mut m = self.message(MessageType::Release, random_u32(), current.address);
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier(current.server));
        let bytes = m
            .to_vec()
            .map_err(|e| ExchangeError::Io(format!("encode DHCPRELEASE: {e}")))?;
        self.sock
            .send(current.address, current.server, &bytes)
            .map_err(|e| ExchangeError::Io(format!("send DHCPRELEASE on {}: {e}", self.ifname)))
    }
}

fn mask_prefix(mask: Ipv4Addr) -> u8 {
    u32::from(mask).leading_ones() as u8
}

/// The binding an ACK grants; a NAK or an ACK without a subnet mask is
/// refused (the reference's "DHCP option Subnet Mask not found").
pub fn binding_from_ack(m: &Message) -> Result<Binding> {
    let o = m.opts();
    if o.has_msg_type(MessageType::Nak) {
        let why = match o.get(OptionCode::Message) {
            Some(DhcpOption::Message(s)) => format!(": {s}"),
            _ => String::new(),
        };
        return Err(ExchangeError::Refused(format!(
            "DHCP server sent DHCPNAK{why}"
        )));
    }
    let prefix = match o.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => mask_prefix(*mask),
        _ => {
            return Err(ExchangeError::Refused(
                "DHCP option Subnet Mask not found in DHCPACK".into(),
            ));
        }
    };
    let server = match o.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => *s,
        _ => m.siaddr(),
    };
    let routers = match o.get(OptionCode::Router) {
        Some(DhcpOption::Router(r)) => r.clone(),
        _ => Vec::new(),
    };
    let dns = match o.get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(r)) => r.clone(),
        _ => Vec::new(),
    };
    let domain = match o.get(OptionCode::DomainName) {
        Some(DhcpOption::DomainName(d)) => d.clone(),
        _ => String::new(),
    };
    let classless_routes = match o.get(OptionCode::ClasslessStaticRoute) {
        Some(DhcpOption::ClasslessStaticRoute(r)) => r
            .iter()
            .map(|(net, router)| ClasslessRoute {
                dst: net.network(),
                prefix: net.prefix_len(),
                router: *router,
            })
            .collect(),
        _ => Vec::new(),
    };
    let static_routes = match o.get(OptionCode::StaticRoutingTable) {
        Some(DhcpOption::StaticRoutingTable(r)) => r.clone(),
        _ => Vec::new(),
    };
    let lease_secs = match o.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(t)) => *t,
        _ => DEFAULT_LEASE_SECS,
    };
    let renew_secs = match o.get(OptionCode::Renewal) {
        Some(DhcpOption::Renewal(t)) => *t,
        _ => lease_secs / 2,
    };
    let rebind_secs = match o.get(OptionCode::Rebinding) {
        Some(DhcpOption::Rebinding(t)) => *t,
        _ => (u64::from(lease_secs) * 85 / 100) as u32,
    };
    Ok(Binding {
        address: m.yiaddr(),
        prefix,
        server,
        routers,
        classless_routes,
        static_routes,
        dns,
        domain,
        bound_at: unix_now(),
        lease_secs,
        renew_secs,
        rebind_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_becomes_a_binding() {
        let mut m = Message::default();
        m.set_opcode(Opcode::BootReply)
            .set_yiaddr(Ipv4Addr::new(10, 1, 0, 9));
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(MessageType::Ack));
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 1, 0, 1)));
        o.insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 1, 0, 254)]));
        o.insert(DhcpOption::AddressLeaseTime(120));
        let bytes = m.to_vec().unwrap();
        let b = binding_from_ack(&Message::from_bytes(&bytes).unwrap()).unwrap();
        assert_eq!(b.prefix, 24);
        assert_eq!(b.renew_secs, 60);
        assert_eq!(b.rebind_secs, 102);
        assert_eq!(b.routers, vec![Ipv4Addr::new(10, 1, 0, 254)]);
    }

    #[test]
    fn a_nak_or_a_maskless_ack_is_refused() {
        let mut m = Message::default();
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Ack));
        assert!(matches!(
            binding_from_ack(&m),
            Err(ExchangeError::Refused(_))
        ));
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Nak));
        assert!(
            binding_from_ack(&m)
                .unwrap_err()
                .to_string()
                .contains("DHCPNAK")
        );
    }
}
