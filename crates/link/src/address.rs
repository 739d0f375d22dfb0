//! IP addresses on links.

use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};

use crate::connection::Netlink;
use crate::error::{Error, Result, ctx};

/// One address assigned to a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub index: u32,
    /// Address with its prefix length (host bits kept, like CNI results).
    pub network: IpNetwork,
    /// `RT_SCOPE_*`: 0 global, 253 link, 254 host.
    pub scope: u8,
    /// IPv6 duplicate address detection still running.
    pub tentative: bool,
    /// IPv6 duplicate address detection found a duplicate.
    pub dad_failed: bool,
}

impl Address {
    fn from_message(msg: &AddressMessage) -> Option<Self> {
        let mut local = None;
        let mut address = None;
        let mut flags = None;
        for attr in &msg.attributes {
            match attr {
                AddressAttribute::Local(ip) => local = Some(*ip),
                AddressAttribute::Address(ip) => address = Some(*ip),
                AddressAttribute::Flags(f) => flags = Some(*f),
                _ => {}
            }
        }
        // For IPv4 IFA_LOCAL is the interface's own address (IFA_ADDRESS is
        // the peer on point-to-point links); IPv6 only sends IFA_ADDRESS.
        let ip = local.or(address)?;
        let network = IpNetwork::new(ip, msg.header.prefix_len).ok()?;
        let flags = flags
            .unwrap_or_else(|| AddressFlags::from_bits_truncate(msg.header.flags.bits().into()));
        Some(Address {
            index: msg.header.index,
            network,
            scope: msg.header.scope.into(),
            tentative: flags.contains(AddressFlags::Tentative),
            dad_failed: flags.contains(AddressFlags::Dadfailed),
        })
    }
}

impl Netlink {
    /// Add `network` (address/prefix) to link `index`. An identical address
    /// already present is an EEXIST error; callers decide whether that is fine.
    pub fn add_address(&self, index: u32, network: IpNetwork) -> Result<()> {
        let req = self
            .handle()
            .address()
            .add(index, network.ip(), network.prefix());
        // The name is looked up only when there is an error to report.
        self.block_on(req.execute()).map_err(|e| {
            ctx(
                "add address",
                format!("{network} to {}", self.describe(index)),
            )(e)
        })
    }

    /// Remove `network` from link `index`. Returns `false` if it was not there.
    pub fn delete_address(&self, index: u32, network: IpNetwork) -> Result<bool> {
        let msgs = self.address_messages(Some(index))?;
        let Some(msg) = msgs
            .into_iter()
            .find(|m| Address::from_message(m).is_some_and(|a| a.network == network))
        else {
            return Ok(false);
        };
        let req = self.handle().address().del(msg);
        match self.block_on(req.execute()) {
            Ok(()) => Ok(true),
            Err(e) => {
                let e = ctx(
                    "delete address",
                    format!("{network} from {}", self.describe(index)),
                )(e);
                if e.errno() == Some(libc::EADDRNOTAVAIL) {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Addresses of link `index`, or of every link when `None`.
    pub fn addresses(&self, index: Option<u32>) -> Result<Vec<Address>> {
        Ok(self
            .address_messages(index)?
            .iter()
            .filter_map(Address::from_message)
            .collect())
    }

    fn address_messages(&self, index: Option<u32>) -> Result<Vec<AddressMessage>> {
        let mut req = self.handle().address().get();
        if let Some(i) = index {
            // The filter rtnetlink offers is applied to the replies only;
            // the index in the request header is what lets the kernel
            // (with strict checking) send just this link's addresses.
            req.message_mut().header.index = i;
            req = req.set_link_index_filter(i);
        }
        let object = index.map_or_else(|| "all links".to_string(), |i| format!("index {i}"));
        let msgs: Vec<AddressMessage> = self
            .block_on(req.execute().try_collect())
            .map_err(ctx("list addresses of", object))?;
        // The kernel may ignore the filter without strict checking.
        Ok(msgs
            .into_iter()
            .filter(|m| index.is_none_or(|i| m.header.index == i))
            .collect())
    }

    /// Fail if `index` carries an IPv6 address whose DAD failed; used after
    /// configuring addresses so a duplicate is reported, not silently kept.
    pub fn check_dad_failed(&self, index: u32) -> Result<()> {
        for a in self.addresses(Some(index))? {
            if a.dad_failed {
                return Err(Error::Invalid(format!(
                    "link {} has address {} in DADFAILED state",
                    self.describe(index),
                    a.network
                )));
            }
        }
        Ok(())
    }
}
