//! Policy routing rules (`ip rule`): source rules pointing at a table.

use std::fmt;
use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::route::RouteHeader;
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::IpVersion;

use crate::connection::Netlink;
use crate::error::{Result, ctx};

/// A rule as the kernel reports it, with the fields the plugins look at.
/// The message itself is kept so that a delete names exactly this rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `from` address and prefix length; `None` is `from all`.
    pub source: Option<(IpAddr, u8)>,
    pub table: u32,
    pub priority: Option<u32>,
    message: RuleMessage,
}

impl Rule {
    fn from_message(message: RuleMessage) -> Self {
        let mut table = u32::from(message.header.table);
        let mut source = None;
        let mut priority = None;
        for attr in &message.attributes {
            match attr {
                RuleAttribute::Table(t) => table = *t,
                RuleAttribute::Source(ip) => source = Some((*ip, message.header.src_len)),
                RuleAttribute::Priority(p) => priority = Some(*p),
                _ => {}
            }
        }
        Rule {
            source,
            table,
            priority,
            message,
        }
    }

    /// The rule's source address when it matches exactly one address.
    pub fn source_host(&self) -> Option<IpAddr> {
        match self.source {
            Some((ip @ IpAddr::V4(_), 32)) | Some((ip @ IpAddr::V6(_), 128)) => Some(ip),
            _ => None,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = self.priority {
            write!(f, "{p}: ")?;
        }
        match self.source {
            Some((ip, len)) => write!(f, "from {ip}/{len}")?,
            None => write!(f, "from all")?,
        }
        write!(f, " lookup {}", self.table)
    }
}

impl Netlink {
    /// Rules of both families, in the kernel's order.
    pub fn rules(&self) -> Result<Vec<Rule>> {
        let mut out = Vec::new();
        for (version, name) in [(IpVersion::V4, "ipv4"), (IpVersion::V6, "ipv6")] {
            let req = self.handle().rule().get(version);
            let msgs: Vec<RuleMessage> = self
                .block_on(req.execute().try_collect())
                .map_err(ctx("list rules", name))?;
            out.extend(msgs.into_iter().map(Rule::from_message));
        }
        Ok(out)
    }

    /// `ip rule add from IP lookup TABLE`: the source is the single address
    /// `ip` (/32 or /128), the priority is the kernel's choice (just above
    /// the first non-local rule), as the reference's netlink library sends
    /// it: the table in the header when it fits and always as FRA_TABLE.
    pub fn add_source_rule(&self, ip: IpAddr, table: u32) -> Result<()> {
        let mut msg = RuleMessage::default();
        let (family, len) = match ip {
            IpAddr::V4(_) => (AddressFamily::Inet, 32),
            IpAddr::V6(_) => (AddressFamily::Inet6, 128),
        };
        msg.header.family = family;
        msg.header.src_len = len;
        msg.header.action = RuleAction::ToTable;
        msg.header.table = u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        msg.attributes.push(RuleAttribute::Table(table));
        msg.attributes.push(RuleAttribute::Source(ip));
        let mut req = self.handle().rule().add();
        *req.message_mut() = msg;
        self.block_on(req.execute())
            .map_err(ctx("add rule", format!("from {ip} lookup {table}")))
    }

    /// Delete one rule as listed. Returns `false` if it was already gone.
    pub fn delete_rule(&self, rule: &Rule) -> Result<bool> {
        let req = self.handle().rule().del(rule.message.clone());
        match self.block_on(req.execute()) {
            Ok(()) => Ok(true),
            Err(e) => {
                let e = ctx("delete rule", rule)(e);
                if e.is_not_found() { Ok(false) } else { Err(e) }
            }
        }
    }
}
