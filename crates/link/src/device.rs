//! Whole devices moved between namespaces (host-device): the move and the
//! rename are one request, so a device is never seen in either namespace
//! under a half-applied name, and the host name travels with the device
//! in its alias (`IFLA_IFALIAS`).

use futures::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netns::NetNs;
use rtnetlink::LinkUnspec;

use crate::connection::Netlink;
use crate::error::{Result, ctx};
use crate::links::Link;

impl Netlink {
    /// Every link with its alias (`None` when it has none).
    pub fn links_with_alias(&self) -> Result<Vec<(Link, Option<String>)>> {
        let req = self.handle().link().get();
        let msgs: Vec<LinkMessage> = self
            .block_on(req.execute().try_collect())
            .map_err(ctx("list links", "in namespace"))?;
        Ok(msgs
            .iter()
            .map(|m| {
                let alias = m.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfAlias(s) if !s.is_empty() => Some(s.clone()),
                    _ => None,
                });
                (Link::from_message(m), alias)
            })
            .collect())
    }

    /// The alias of link `index`, `None` when unset or the link is gone.
    pub fn alias_of(&self, index: u32) -> Result<Option<String>> {
        Ok(self
            .links_with_alias()?
            .into_iter()
            .find(|(l, _)| l.index == index)
            .and_then(|(_, a)| a))
    }

    /// Set (or with `""` clear) the alias of link `index`.
    pub fn set_alias(&self, index: u32, alias: &str) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).alias(alias).build();
        let req = self.handle().link().change(msg);
        self.block_on(req.execute())
            .map_err(ctx("set alias", self.describe(index)))
    }

    /// Move link `index` into namespace `target`, renamed to `name` on the
    /// way (`ip link set DEV netns NS name NAME`). The device either
    /// arrives under `name` or stays here: the kernel moves it first and
    /// renames it in `target` after, so a name already taken there would
    /// leave it in `target` under its old name — it is then moved back.
    pub fn move_to_netns(&self, index: u32, target: &NetNs, name: &str) -> Result<()> {
        let Some(original) = self.link_by_index(index)? else {
            return Err(crate::error::Error::Netlink {
                op: "move link",
                object: format!("index {index}"),
                source: std::io::Error::from_raw_os_error(libc::ENODEV),
            });
        };
        let msg = LinkUnspec::new_with_index(index)
            .setns_by_fd(target.raw_fd())
            .name(name)
            .build();
        let req = self.handle().link().change(msg);
        let Err(e) = self.block_on(req.execute()) else {
            return Ok(());
        };
        let err = ctx(
            "move link",
            format!("{} to {} as {name}", original.name, target.path().display()),
        )(e);
        if self.link_by_index(index)?.is_none() {
            let there = Netlink::in_netns(target)?;
            if let Some(l) = there.link_by_name(&original.name)?
                && l.mac == original.mac
            {
                let back = LinkUnspec::new_with_index(l.index)
                    .setns_by_fd(self.netns().raw_fd())
                    .build();
                let req = there.handle().link().change(back);
                there
                    .block_on(req.execute())
                    .map_err(ctx("move link back", &original.name))?;
            }
        }
        Err(err)
    }
}
