//! iptables backend: one `iptables-save -t nat` to read, one
//! `iptables-restore --noflush` to change, per address family.

mod batch;
mod check;
pub(crate) mod firewall;
mod hostports;
mod masquerade;
mod save;
mod xtrules;

use crate::error::{Error, Result};
use crate::exec::Program;
use crate::nfnl::inventory::Inventory;
use crate::nfnl::reader::{self, Deletion};

pub use batch::Batch;
pub use save::NatTable;

pub(crate) use crate::family::Family;

/// What IPv4 and IPv6 mean to iptables: `iptables-*` and `ip6tables-*`.
impl Family {
    fn program(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    /// Whether an iptables-legacy `nat` table exists in the calling
    /// thread's namespace. Legacy state is invisible to [`Inventory`]; when
    /// there is none, all iptables state lives in nf_tables, whichever
    /// iptables binary is installed. (`/proc/thread-self/net` is the
    /// thread's namespace; the file is absent without the legacy module.)
    fn legacy_nat_loaded(self) -> bool {
        self.legacy_loaded("nat")
    }

    /// Whether an iptables-legacy table `table` exists (see above).
    fn legacy_loaded(self, table: &str) -> bool {
        let file = match self {
            Family::V4 => "/proc/thread-self/net/ip_tables_names",
            Family::V6 => "/proc/thread-self/net/ip6_tables_names",
        };
        std::fs::read_to_string(file)
            .map(|names| names.lines().any(|l| l.trim() == table))
            .unwrap_or(false)
    }

    /// Which of `chains` exist in this family's `nat` table, when that can
    /// be known without a process (iptables-nft); `None` = unknown.
    pub fn existing_chains(
        self,
        inventory: Option<&Inventory>,
        chains: &[&str],
    ) -> Option<Vec<String>> {
        let inv = inventory?;
        if self.legacy_nat_loaded() {
            return None;
        }
        Some(
            chains
                .iter()
                .filter(|c| inv.has_chain(self.nfproto(), "nat", c))
                .map(|c| c.to_string())
                .collect(),
        )
    }

    /// Whether `chain` holds a rule that `is_it` accepts, read over
    /// netlink: no process, and only that chain (where any `-C` in an
    /// `iptables-restore` batch has it fetch and decode every rule of the
    /// table's base chains and of each chain it names). `None` when this
    /// cannot be known: an iptables-legacy `nat` table is loaded, or
    /// nf_tables could not be read.
    ///
    /// A rule that jumps to `target` is first looked for next to that chain
    /// ([`reader::jump_near`]): POSTROUTING, which holds a masquerade
    /// jump per bridged container, is then not listed.
    pub fn has_rule(
        self,
        chain: &str,
        target: Option<&str>,
        is_it: impl Fn(&reader::RuleInfo) -> bool,
    ) -> Option<bool> {
        if self.legacy_nat_loaded() {
            return None;
        }
        if let Some(t) = target
            && reader::jump_near(self.nfproto(), "nat", chain, t, &is_it).is_some()
        {
            return Some(true);
        }
        let rules = reader::rules(self.nfproto(), "nat", chain).ok()?;
        Some(rules.iter().any(is_it))
    }

    /// Remove each `(parent, chain)`: the rules of `parent` jumping to
    /// `chain`, then `chain` itself — directly in nf_tables, no process.
    /// Only when all iptables state is there (no legacy `nat` table);
    /// returns false when this is not possible or failed, so the caller
    /// falls back to `iptables-save`/`iptables-restore`.
    pub fn remove_chains_over_netlink(self, pairs: &[(&str, &str)]) -> bool {
        if self.legacy_nat_loaded() {
            return false;
        }
        let nfproto = self.nfproto();
        // Every existing chain of `pairs` with the jumps `find` gives for
        // it; `None` when `find` or a lookup cannot tell.
        type Find<'a> =
            dyn Fn(&str, &str, &reader::ChainInfo) -> Option<Vec<reader::RuleInfo>> + 'a;
        let plan_with = |find: &Find<'_>| {
            let mut ops = vec![];
            for (parent, chain) in pairs {
                let Some(info) = reader::chain(nfproto, "nat", chain).ok()? else {
                    continue;
                };
                for r in find(parent, chain, &info)? {
                    ops.push(Deletion::Rule {
                        chain: parent.to_string(),
                        handle: r.handle,
                    });
                }
                ops.push(Deletion::FlushChain(chain.to_string()));
                ops.push(Deletion::Chain(chain.to_string()));
            }
            Some(ops)
        };
        // The short way: each chain's jumps found next to it, one request
        // each; any miss or a batch that fails goes the long way: listing
        // the parent chains.
        let near = |parent: &str, chain: &str, info: &reader::ChainInfo| {
            reader::jumps_near(nfproto, "nat", parent, chain, info)
        };
        if let Some(ops) = plan_with(&near)
            && reader::delete(nfproto, "nat", &ops).is_ok()
        {
            return true;
        }
        let listed = |parent: &str, chain: &str, _: &reader::ChainInfo| {
            let rules = reader::rules(nfproto, "nat", parent).ok()?;
            Some(
                rules
                    .into_iter()
                    .filter(|r| r.jump.as_deref() == Some(chain))
                    .collect(),
            )
        };
        let plan =
            || plan_with(&listed).ok_or_else(|| std::io::Error::other("nf_tables unreadable"));
        reader::plan_and_delete(nfproto, "nat", plan).is_ok()
    }

    fn save_program(self) -> &'static str {
        match self {
            Family::V4 => "iptables-save",
            Family::V6 => "ip6tables-save",
        }
    }

    fn restore_program(self) -> &'static str {
        match self {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        }
    }

    /// Whether this family's programs are installed.
    pub fn installed(self) -> bool {
        Program::find(self.save_program()).is_ok() && Program::find(self.restore_program()).is_ok()
    }

    pub fn multicast(self) -> &'static str {
        match self {
            Family::V4 => "224.0.0.0/4",
            Family::V6 => "ff00::/8",
        }
    }
}

/// The IPv4 programs decide whether the backend is installed; IPv6 is
/// optional (a host without ip6tables can still map IPv4 ports).
pub fn installed() -> Result<()> {
    Program::find("iptables-save")?;
    Program::find("iptables-restore")?;
    Ok(())
}

pub fn probe() -> Result<()> {
    read_nat(Family::V4).map(|_| ())
}

/// The current `nat` table of `family`.
pub fn read_nat(family: Family) -> Result<NatTable> {
    let out = Program::find(family.save_program())?.run(&["-t", "nat"], None)?;
    Ok(NatTable::parse(&out))
}

/// Only the rules of `listed` (`iptables -t nat -S <chain>`, one process
/// each; far cheaper than a whole-table save when the ruleset is large),
/// with `known` as the chains that exist.
pub fn read_chains(family: Family, listed: &[&str], known: &[String]) -> Result<NatTable> {
    let program = Program::find(family.program())?;
    let outputs = listed
        .iter()
        .map(|chain| program.run(&["-t", "nat", "-S", chain], None))
        .collect::<Result<Vec<_>>>()?;
    Ok(NatTable::from_listings(
        outputs.iter().map(String::as_str),
        known,
    ))
}

/// Apply `batch` atomically; nothing changes if any line fails.
pub fn apply(family: Family, batch: &Batch) -> Result<()> {
    apply_table(family, "nat", batch)
}

/// [`apply`] for another table.
pub fn apply_table(family: Family, table: &str, batch: &Batch) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    Program::find(family.restore_program())?
        .run(&["--noflush", "-w"], Some(&batch.render_table(table)))
        .map(|_| ())
}

/// The `filter` table of `family` as `iptables-save -t filter` prints it.
pub fn read_filter(family: Family) -> Result<NatTable> {
    let out = Program::find(family.save_program())?.run(&["-t", "filter"], None)?;
    Ok(NatTable::parse_table(&out, "filter"))
}

/// How often a read-modify-write is retried when the table changed between
/// the read and the write (another plugin run, e.g. a concurrent DEL).
const ATTEMPTS: usize = 4;

/// Read, plan, apply; on failure read again and re-plan, so that a rule
/// removed concurrently ("already gone") is simply not deleted twice.
pub fn read_modify_write(family: Family, plan: impl Fn(&NatTable) -> Result<Batch>) -> Result<()> {
    read_modify_write_with(family, || read_nat(family), plan)
}

/// [`read_modify_write`] with a custom (cheaper, narrower) read.
pub fn read_modify_write_with(
    family: Family,
    read: impl Fn() -> Result<NatTable>,
    plan: impl Fn(&NatTable) -> Result<Batch>,
) -> Result<()> {
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let table = read()?;
        let batch = plan(&table)?;
        match apply(family, &batch) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Missing("iptables-restore never ran".into())))
}

/// For DEL and GC: a family whose table cannot even be read (no IPv6 in
/// the kernel, say) holds no rules of ours, so its failure is not an error
/// (the reference skips such a family the same way).
pub fn tolerate_unusable(family: Family, r: Result<()>) -> Result<()> {
    match r {
        Err(_) if read_nat(family).is_err() => Ok(()),
        r => r,
    }
}

/// The iptables backend.
pub struct Iptables;

crate::types::backend_impl!(Iptables);
