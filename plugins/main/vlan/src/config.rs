//! The vlan plugin's keys and validation, with the reference's messages.

use attach::sublink::Plan;
use cni::{Error, Request, Result};
use link::SubLinkKind;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    #[serde(default)]
    master: String,
    #[serde(default, rename = "vlanId")]
    vlan_id: i64,
    #[serde(default)]
    mtu: i64,
    #[serde(default)]
    link_in_container: bool,
}

/// Validated settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conf {
    pub master: String,
    pub vlan_id: u16,
    /// 0: the master's.
    pub mtu: u32,
    pub link_in_container: bool,
    pub ipam: Option<String>,
}

impl Conf {
    /// Everything that can be checked without the kernel.
    pub fn parse(req: &Request) -> Result<Conf> {
        let raw: RawConf = req.plugin_config()?;
        if raw.master.is_empty() {
            return Err(Error::invalid_config(
                "\"master\" field is required. It specifies the host interface name to create the VLAN for",
            ));
        }
        let vlan_id = u16::try_from(raw.vlan_id)
            .ok()
            .filter(|v| *v <= 4094)
            .ok_or_else(|| {
                Error::invalid_config(format!(
                    "invalid VLAN ID {} (must be between 0 and 4095 inclusive)",
                    raw.vlan_id
                ))
            })?;
        let mtu = attach::sublink::parse_mtu(raw.mtu)?;
        Ok(Conf {
            master: raw.master,
            vlan_id,
            mtu,
            link_in_container: raw.link_in_container,
            ipam: req.config.ipam_type().map(str::to_string),
        })
    }

    /// Check `mtu` against the master's, and that IPAM is configured (the
    /// vlan plugin always runs IPAM).
    pub fn resolve(self, req: &Request) -> Result<Conf> {
        if self.ipam.is_none() {
            return Err(Error::invalid_config(
                "failed to execute IPAM delegate: no IPAM plugin configured (\"ipam\": {\"type\": ...})",
            ));
        }
        attach::sublink::check_mtu(req, &self.master, self.link_in_container, self.mtu)?;
        Ok(self)
    }

    pub fn plan(&self) -> Plan {
        Plan {
            plugin: "vlan",
            master: self.master.clone(),
            link_in_container: self.link_in_container,
            kind: SubLinkKind::Vlan { id: self.vlan_id },
            mtu: Some(self.mtu).filter(|m| *m > 0),
            mac: None,
            ipam: self.ipam.clone(),
            addresses: None,
            notify_sysctls: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::Command;
    use link::{SubLinkOptions, sublink_message_bytes};

    fn req(conf: &str) -> Request {
        let mut r = Request::from_config(Command::Add, conf.as_bytes(), "").unwrap();
        r.container_id = "c1".into();
        r.netns = "/var/run/netns/x".into();
        r
    }

    const BASE: &str =
        r#""cniVersion":"1.0.0","name":"n","type":"vlan","ipam":{"type":"host-local"}"#;

    #[test]
    fn keys_are_read() {
        let c = Conf::parse(&req(&format!(
            r#"{{{BASE},"master":"lan0","vlanId":100,"mtu":1400,"linkInContainer":true}}"#
        )))
        .unwrap();
        assert_eq!(
            c,
            Conf {
                master: "lan0".into(),
                vlan_id: 100,
                mtu: 1400,
                link_in_container: true,
                ipam: Some("host-local".into()),
            }
        );
        let c = Conf::parse(&req(&format!(r#"{{{BASE},"master":"lan0"}}"#))).unwrap();
        assert_eq!((c.vlan_id, c.mtu, c.link_in_container), (0, 0, false));
        assert_eq!(c.plan().mtu, None);
    }

    #[test]
    fn bad_values_are_config_errors_naming_them() {
        for (extra, want) in [
            (r#""vlanId":5"#, "\"master\" field is required"),
            (r#""master":"lan0","vlanId":4095"#, "invalid VLAN ID 4095"),
            (r#""master":"lan0","vlanId":-1"#, "invalid VLAN ID -1"),
            (r#""master":"lan0","mtu":-3"#, "invalid MTU -3"),
        ] {
            let e = Conf::parse(&req(&format!("{{{BASE},{extra}}}"))).unwrap_err();
            assert_eq!(e.code, cni::code::INVALID_CONFIG, "{extra}");
            assert!(e.msg.contains(want), "{} !~ {want}", e.msg);
        }
        let e =
            Conf::parse(&req(&format!(r#"{{{BASE},"master":"lan0","vlanId":"x"}}"#))).unwrap_err();
        assert!(e.msg.contains("vlanId"), "{}", e.msg);
    }

    /// ADD's request for vlanId 100 on parent index 4, created in another
    /// namespace: IFLA_LINKINFO{kind "vlan", data{IFLA_VLAN_ID = 100}} and
    /// IFLA_NET_NS_FD.
    #[test]
    fn netlink_message_of_a_plan() {
        let c = Conf::parse(&req(&format!(r#"{{{BASE},"master":"lan0","vlanId":100}}"#))).unwrap();
        let p = c.plan();
        let ns = netns_self();
        let bytes = sublink_message_bytes(&SubLinkOptions {
            name: "eth0",
            kind: p.kind,
            parent_index: 4,
            mtu: p.mtu,
            mac: None,
            target_ns: Some(&ns),
        });
        let find = |t: u16| -> Option<Vec<u8>> {
            let mut b = &bytes[16..];
            while b.len() >= 4 {
                let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
                let ty = u16::from_ne_bytes([b[2], b[3]]);
                if ty == t {
                    return Some(b[4..len].to_vec());
                }
                b = &b[len.div_ceil(4) * 4..];
            }
            None
        };
        assert_eq!(find(3).unwrap(), b"eth0\0"); // IFLA_IFNAME
        assert_eq!(find(5).unwrap(), 4u32.to_ne_bytes()); // IFLA_LINK
        assert_eq!(find(4), None); // no IFLA_MTU: the master's
        assert_eq!(find(28).unwrap(), (ns.raw_fd() as u32).to_ne_bytes()); // IFLA_NET_NS_FD
        let mut info = vec![9, 0, 1, 0];
        info.extend_from_slice(b"vlan\0\0\0\0");
        info.extend_from_slice(&[12, 0, 2, 0, 6, 0, 1, 0]);
        info.extend_from_slice(&100u16.to_ne_bytes());
        info.extend_from_slice(&[0, 0]);
        assert_eq!(find(18).unwrap(), info); // IFLA_LINKINFO
    }

    fn netns_self() -> netns::NetNs {
        netns::NetNs::current().unwrap()
    }
}
