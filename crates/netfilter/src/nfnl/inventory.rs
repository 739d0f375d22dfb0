//! Which nf_tables tables and chains exist, read over netlink in well under
//! a millisecond. DEL uses it to skip whole backends and families that hold
//! nothing of the container, instead of starting `nft`/`iptables-save`
//! processes just to find that out — with a large ruleset each of those
//! costs tens of milliseconds, because both tools load the whole ruleset.
//!
//! It sees nftables and iptables-nft state (both live in nf_tables), not
//! iptables-legacy; callers treat "not visible here" as "unknown" then.

use crate::nfnl::abi::{
    NFNL_SUBSYS_NFTABLES, NFT_MSG_GETCHAIN, NFT_MSG_GETTABLE, NFTA_CHAIN_NAME, NFTA_CHAIN_TABLE,
    NFTA_TABLE_NAME,
};
use crate::nfnl::socket::{NLM_F_DUMP, NLM_F_REQUEST, attributes, message, string, with_socket};

#[derive(Debug, Default)]
pub struct Inventory {
    tables: Vec<(u8, String)>,
    chains: Vec<(u8, String, String)>,
}

impl Inventory {
    /// Dump tables and chains of all families; `None` when nf_tables
    /// cannot be asked (no kernel support, no permission).
    pub fn read() -> Option<Inventory> {
        let mut inv = Inventory::default();
        let family_of = |payload: &[u8]| payload.first().copied().unwrap_or(0);
        let req = message(
            NFNL_SUBSYS_NFTABLES,
            NFT_MSG_GETTABLE,
            NLM_F_REQUEST | NLM_F_DUMP,
            1,
            0,
            &[],
        );
        with_socket(|sock| {
            sock.dump(&req, |_, payload| {
                let attrs = payload.get(4..).unwrap_or_default();
                if let Some((_, _, name)) =
                    attributes(attrs).find(|(k, _, _)| *k == NFTA_TABLE_NAME)
                {
                    inv.tables.push((family_of(payload), string(name)));
                }
            })
        })
        .ok()?;
        let req = message(
            NFNL_SUBSYS_NFTABLES,
            NFT_MSG_GETCHAIN,
            NLM_F_REQUEST | NLM_F_DUMP,
            2,
            0,
            &[],
        );
        with_socket(|sock| {
            sock.dump(&req, |_, payload| {
                let attrs = payload.get(4..).unwrap_or_default();
                let mut table = None;
                let mut name = None;
                for (k, _, v) in attributes(attrs) {
                    match k {
                        NFTA_CHAIN_TABLE => table = Some(string(v)),
                        NFTA_CHAIN_NAME => name = Some(string(v)),
                        _ => {}
                    }
                }
                if let (Some(t), Some(n)) = (table, name) {
                    inv.chains.push((family_of(payload), t, n));
                }
            })
        })
        .ok()?;
        Some(inv)
    }

    /// Whether table `family name` exists: one request for that table,
    /// where [`Inventory::read`] dumps every chain of the ruleset (one per
    /// container in some layouts). `None` when nf_tables cannot be asked.
    pub fn table_exists(family: u8, name: &str) -> Option<bool> {
        exists(NFT_MSG_GETTABLE, family, &attr_str(NFTA_TABLE_NAME, name))
    }

    /// Whether chain `family table chain` exists (one request).
    pub fn chain_exists(family: u8, table: &str, chain: &str) -> Option<bool> {
        let mut attrs = attr_str(NFTA_CHAIN_TABLE, table);
        attrs.extend(attr_str(NFTA_CHAIN_NAME, chain));
        exists(NFT_MSG_GETCHAIN, family, &attrs)
    }

    /// The names of the chains of `family table`.
    pub fn chains_of<'a>(&'a self, family: u8, table: &'a str) -> impl Iterator<Item = &'a str> {
        self.chains
            .iter()
            .filter(move |(f, t, _)| *f == family && t == table)
            .map(|(_, _, c)| c.as_str())
    }

    pub fn has_chain(&self, family: u8, table: &str, chain: &str) -> bool {
        self.chains
            .iter()
            .any(|(f, t, c)| *f == family && t == table && c == chain)
    }
}

fn attr_str(kind: u16, s: &str) -> Vec<u8> {
    let len = 4 + s.len() + 1;
    let mut a = Vec::with_capacity(crate::nfnl::socket::align(len));
    a.extend_from_slice(&(len as u16).to_ne_bytes());
    a.extend_from_slice(&kind.to_ne_bytes());
    a.extend_from_slice(s.as_bytes());
    a.push(0);
    a.resize(crate::nfnl::socket::align(len), 0);
    a
}

/// A get request for one object: it exists when the kernel answers with
/// it, not when it answers ENOENT.
fn exists(msg_type: u16, family: u8, attrs: &[u8]) -> Option<bool> {
    let mut found = false;
    crate::nfnl::reader::get(family, msg_type, attrs, |_, _| found = true)
        .ok()
        .map(|_| found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nfnl::abi::{NFPROTO_IPV4, NFPROTO_IPV6};

    // Runs in the test process's own namespace: only reads.
    #[test]
    fn reads_without_error_when_nf_tables_is_there() {
        if let Some(inv) = Inventory::read() {
            assert!(!inv.has_chain(NFPROTO_IPV4, "surely-not-a-table", "name"));
        }
    }

    /// One-object lookups against what `nft` created in a throwaway netns.
    #[test]
    fn table_and_chain_lookups() {
        let found = crate::testutil::in_netns("natinv", || {
            let out = std::process::Command::new("nft")
                .args(["add table ip t1 ; add chain ip t1 c1"])
                .output()
                .expect("run nft");
            assert!(out.status.success(), "{out:?}");
            [
                Inventory::table_exists(NFPROTO_IPV4, "t1"),
                Inventory::table_exists(NFPROTO_IPV6, "t1"),
                Inventory::table_exists(NFPROTO_IPV4, "t2"),
                Inventory::chain_exists(NFPROTO_IPV4, "t1", "c1"),
                Inventory::chain_exists(NFPROTO_IPV4, "t1", "c2"),
                Inventory::chain_exists(NFPROTO_IPV4, "t2", "c1"),
            ]
        });
        let want = [true, false, false, true, false, false].map(Some);
        assert_eq!(found, want);
    }
}
