//! Chain names, table names and comments, byte for byte as the Go reference
//! plugins write them, so that either implementation finds and removes the
//! other's state on a node being upgraded (reference §11).

use sha2::{Digest, Sha512};

/// iptables chains shared by all host-port mappings (never deleted).
pub const HOSTPORT_DNAT_CHAIN: &str = "CNI-HOSTPORT-DNAT";
pub const HOSTPORT_SETMARK_CHAIN: &str = "CNI-HOSTPORT-SETMARK";
pub const HOSTPORT_MASQ_CHAIN: &str = "CNI-HOSTPORT-MASQ";
/// Created by portmap before v0.7; still torn down if found.
pub const OLD_HOSTPORT_SNAT_CHAIN: &str = "CNI-HOSTPORT-SNAT";

pub const SETMARK_COMMENT: &str = "CNI portfwd masquerade mark";
pub const MASQ_ENTRY_COMMENT: &str = "CNI portfwd requiring masquerade";

/// nftables tables and chains.
pub const NFT_MASQ_TABLE: &str = "cni_plugins_masquerade";
pub const NFT_MASQ_TABLE_COMMENT: &str =
    "Masquerading for plugins from github.com/containernetworking/plugins";
pub const NFT_MASQ_CHECKS_CHAIN: &str = "masq_checks";
pub const NFT_MASQ_CHECKS_COMMENT: &str =
    "Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet";
pub const NFT_HOSTPORT_TABLE: &str = "cni_hostport";
pub const NFT_HOSTPORT_TABLE_COMMENT: &str = "CNI portmap plugin";
pub const NFT_HOSTPORTS_CHAIN: &str = "hostports";
/// Kept empty by the reference for upgrades from v1.6.0; still searched on DEL.
pub const NFT_HOSTIP_HOSTPORTS_CHAIN: &str = "hostip_hostports";
pub const NFT_HOSTPORTS_ALL_CHAIN: &str = "hostports_all";
pub const NFT_MASQUERADING_CHAIN: &str = "masquerading";
/// Chains of `cni_hostport` whose rules carry the container id as comment
/// (the reference's DEL searches exactly these).
pub const NFT_OWNED_RULE_CHAINS: [&str; 3] = [
    NFT_HOSTPORTS_CHAIN,
    NFT_HOSTIP_HOSTPORTS_CHAIN,
    NFT_MASQUERADING_CHAIN,
];
/// Prefix of our per-(network, container) marker chains in `cni_hostport`
/// (not in the reference; see `nftables::hostports`).
pub const NFT_OWNER_CHAIN_PREFIX: &str = "owner_";

/// Lowercase hex of SHA-512 of `s`.
fn sha512_hex(s: &str) -> String {
    let digest = Sha512::digest(s.as_bytes());
    let mut out = String::with_capacity(128);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// `CNI-` + 24 hex of sha512(network + containerID): the bridge ipMasq chain
/// (`utils.FormatChainName`).
pub fn masq_chain(network: &str, container_id: &str) -> String {
    format!(
        "CNI-{}",
        &sha512_hex(&format!("{network}{container_id}"))[..24]
    )
}

/// `name: "<net>" id: "<cid>"` (`utils.FormatComment`, Go `%q`; the inputs
/// are validated to contain nothing `%q` would escape).
pub fn masq_comment(network: &str, container_id: &str) -> String {
    format!("name: \"{network}\" id: \"{container_id}\"")
}

/// `CNI-DN-` + 21 hex of sha512(network + containerID): portmap's
/// per-container DNAT chain.
pub fn dnat_chain(network: &str, container_id: &str) -> String {
    format!(
        "CNI-DN-{}",
        &sha512_hex(&format!("{network}{container_id}"))[..21]
    )
}

/// `CNI-SN-` + 21 hex: the per-container SNAT chain of portmap < v0.7.
pub fn old_snat_chain(network: &str, container_id: &str) -> String {
    format!(
        "CNI-SN-{}",
        &sha512_hex(&format!("{network}{container_id}"))[..21]
    )
}

/// `dnat name: "<net>" id: "<cid>"`, trimmed to iptables' 255-byte limit
/// exactly as the reference's `trimComment`.
pub fn dnat_comment(network: &str, container_id: &str) -> String {
    let c = format!("dnat name: \"{network}\" id: \"{container_id}\"");
    if c.len() <= 255 {
        c
    } else {
        // Inputs are ASCII (validated), so byte slicing is on char boundaries.
        format!("{}...", &c[..253])
    }
}

/// First 16 hex of sha512(network): prefix of every nft masquerade comment
/// of that network (`hashForNetwork`).
pub fn nft_masq_network_hash(network: &str) -> String {
    sha512_hex(network)[..16].to_string()
}

/// `<hash(net)>-<hash(ifname:cid)>` (`hashForInstance`).
pub fn nft_masq_instance_hash(network: &str, ifname: &str, container_id: &str) -> String {
    format!(
        "{}-{}",
        nft_masq_network_hash(network),
        &sha512_hex(&format!("{ifname}:{container_id}"))[..16]
    )
}

/// The nft masquerade rule comment (`commentForInstance`), at most 128 bytes.
pub fn nft_masq_comment(network: &str, ifname: &str, container_id: &str) -> String {
    let mut c = format!(
        "{}, net: {}, if: {}, id: {}",
        nft_masq_instance_hash(network, ifname, container_id),
        network.replace('"', ""),
        ifname.replace('"', ""),
        container_id.replace('"', "")
    );
    c.truncate(128);
    c
}

/// Name of our marker chain for one (network, container) in `cni_hostport`:
/// `owner_<16 hex of sha512(network)>_<16 hex of sha512(containerID)>`.
/// The network part lets GC find the containers of one network.
pub fn nft_owner_chain(network: &str, container_id: &str) -> String {
    format!(
        "{}{}",
        nft_owner_chain_prefix(network),
        &sha512_hex(container_id)[..16]
    )
}

/// Prefix shared by all marker chains of one network.
pub fn nft_owner_chain_prefix(network: &str) -> String {
    format!("{NFT_OWNER_CHAIN_PREFIX}{}_", &sha512_hex(network)[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    // Values computed with the Go reference (`utils.FormatChainName` et al.).
    #[test]
    fn chain_names_have_reference_lengths_and_prefixes() {
        let c = masq_chain("mynet", "abc");
        assert_eq!(c.len(), 28);
        assert!(c.starts_with("CNI-"));
        let d = dnat_chain("mynet", "abc");
        assert_eq!(d.len(), 28);
        assert!(d.starts_with("CNI-DN-"));
        assert_eq!(&c[4..25], &d[7..]);
    }

    #[test]
    fn long_dnat_comment_is_trimmed_like_the_reference() {
        let long = "a".repeat(300);
        let c = dnat_comment("n", &long);
        assert_eq!(c.len(), 256);
        assert!(c.ends_with("..."));
    }

    #[test]
    fn nft_masq_comment_starts_with_instance_hash_and_is_capped() {
        let c = nft_masq_comment("net", "eth0", "cid");
        assert!(c.starts_with(&nft_masq_instance_hash("net", "eth0", "cid")));
        assert!(c.ends_with(", net: net, if: eth0, id: cid"));
        assert!(nft_masq_comment("n", "e", &"x".repeat(200)).len() == 128);
    }
}
