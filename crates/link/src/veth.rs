//! Veth pairs whose container end is born inside the container namespace.

use netlink_packet_route::link::{InfoData, InfoVeth};
use netns::NetNs;
use rtnetlink::{LinkMessageBuilder, LinkUnspec, LinkVeth};

use crate::connection::Netlink;
use crate::error::{Error, Result, to_io};
use crate::links::Link;
use crate::mac::MacAddr;

/// How many random host-side names to try before giving up (as the reference).
const NAME_ATTEMPTS: usize = 10;

/// A veth pair to create from the host side (`self` is the host connection).
#[derive(Debug)]
pub struct VethOptions<'a> {
    /// Name of the end inside the container (CNI_IFNAME).
    pub container_name: &'a str,
    /// Namespace the container end is created in.
    pub container_ns: &'a NetNs,
    /// Host end name; `None` picks `veth` + 8 random hex digits, retrying on
    /// a clash.
    pub host_name: Option<&'a str>,
    /// Bridge the host end is attached to at creation.
    pub bridge_index: Option<u32>,
    pub mtu: Option<u32>,
    pub container_mac: Option<MacAddr>,
}

/// The two ends of a new pair.
#[derive(Debug, Clone)]
pub struct VethPair {
    /// The host end, as read back after creation.
    pub host: Link,
    /// Name of the container end (its index must be read in its namespace).
    pub container_name: String,
}

impl Netlink {
    /// Create the pair in one request: the host end in this connection's
    /// namespace, up and already a port of the bridge; the container end
    /// inside `container_ns`, down, with the requested MAC. Doing it in one
    /// request means no half-made pair is ever visible in the wrong place.
    ///
    /// The caller should first check that `container_name` is free in the
    /// container namespace: the kernel answers EEXIST for either name, and a
    /// clash on the container side would otherwise be retried in vain.
    pub fn create_veth(&self, opts: &VethOptions<'_>) -> Result<VethPair> {
        let attempts = if opts.host_name.is_some() {
            1
        } else {
            NAME_ATTEMPTS
        };
        let mut last = None;
        for _ in 0..attempts {
            let host_name = match opts.host_name {
                Some(n) => n.to_string(),
                None => random_veth_name()?,
            };
            match self.try_create_veth(&host_name, opts) {
                Ok(()) => {
                    let host = self.require_link(&host_name)?;
                    return Ok(VethPair {
                        host,
                        container_name: opts.container_name.to_string(),
                    });
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => last = Some((host_name, e)),
                Err(e) => {
                    return Err(Error::Netlink {
                        op: "create veth pair",
                        object: format!("{host_name} <-> {}", opts.container_name),
                        source: e,
                    });
                }
            }
        }
        let (host_name, source) = last.unwrap_or_else(|| {
            (
                String::new(),
                std::io::Error::from_raw_os_error(libc::EEXIST),
            )
        });
        Err(Error::Netlink {
            op: "create veth pair",
            object: format!("{host_name} <-> {}", opts.container_name),
            source,
        })
    }

    fn try_create_veth(&self, host_name: &str, opts: &VethOptions<'_>) -> std::io::Result<()> {
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(opts.container_name.to_string())
            .setns_by_fd(opts.container_ns.raw_fd());
        if let Some(mtu) = opts.mtu {
            peer = peer.mtu(mtu);
        }
        if let Some(mac) = opts.container_mac {
            peer = peer.address(mac.octets().to_vec());
        }
        let mut host = LinkVeth::new(host_name, "unused")
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
            .up();
        if let Some(br) = opts.bridge_index {
            host = host.controller(br);
        }
        if let Some(mtu) = opts.mtu {
            host = host.mtu(mtu);
        }
        let req = self.handle().link().add(host.build());
        self.block_on(req.execute()).map_err(to_io)
    }
}

/// `veth` + 8 hex digits from 4 random bytes, like the reference.
pub fn random_veth_name() -> Result<String> {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most `len` bytes into the buffer we own.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        return Err(Error::Netlink {
            op: "pick veth name",
            object: "getrandom".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(format!(
        "veth{:02x}{:02x}{:02x}{:02x}",
        b[0], b[1], b[2], b[3]
    ))
}
