//! The ipvlan plugin's keys, defaults and validation, with the reference's
//! messages.

use attach::sublink::Plan;
use cni::{CniResult, Error, Request, Result};
use link::{IpvlanMode, SubLinkKind};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    #[serde(default)]
    master: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    mtu: i64,
    #[serde(default)]
    link_in_container: bool,
}

/// Validated settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conf {
    /// Empty: the single interface of prevResult when chained, else the
    /// interface of the default route.
    pub master: String,
    pub mode: IpvlanMode,
    /// 0: the master's.
    pub mtu: u32,
    pub link_in_container: bool,
    pub ipam: Option<String>,
    /// prevResult, when chained.
    pub prev: Option<CniResult>,
}

impl Conf {
    /// Everything that can be checked without the kernel.
    pub fn parse(req: &Request) -> Result<Conf> {
        let raw: RawConf = req.plugin_config()?;
        let mode = IpvlanMode::parse(&raw.mode)
            .ok_or_else(|| Error::invalid_config(format!("unknown ipvlan mode: {:?}", raw.mode)))?;
        let mtu = u32::try_from(raw.mtu)
            .map_err(|_| Error::invalid_config(format!("invalid MTU {}", raw.mtu)))?;
        let prev = req
            .prev_result()
            .map_err(|e| Error::new(e.code, format!("could not parse prevResult: {}", e.msg)))?;
        Ok(Conf {
            master: raw.master,
            mode,
            mtu,
            link_in_container: raw.link_in_container,
            ipam: req.config.ipam_type().map(str::to_string),
            prev,
        })
    }

    /// The master when none is configured: prevResult's single named
    /// interface when chained, else (not chained) none yet.
    pub fn chained_master(&self) -> Result<Option<String>> {
        if !self.master.is_empty() {
            return Ok(Some(self.master.clone()));
        }
        match &self.prev {
            None => Ok(None),
            Some(p) if p.interfaces.len() == 1 && !p.interfaces[0].name.is_empty() => {
                Ok(Some(p.interfaces[0].name.clone()))
            }
            Some(_) => Err(Error::invalid_config(
                "chained master failure. PrevResult lacks a single named interface",
            )),
        }
    }

    /// Addresses to configure instead of running IPAM: prevResult's, when
    /// there is no `ipam` block and prevResult has IPs.
    pub fn chained_addresses(&self) -> Option<CniResult> {
        if self.ipam.is_some() {
            return None;
        }
        self.prev.clone().filter(|p| !p.ips.is_empty())
    }

    /// Find the master and check that there is a source of addresses.
    pub fn resolve(mut self, req: &Request) -> Result<Conf> {
        self.master = match self.chained_master()? {
            Some(m) => m,
            None => attach::sublink::resolve_master(req, "", self.link_in_container)?,
        };
        Ok(self)
    }

    pub fn plan(&self) -> Result<Plan> {
        let addresses = self.chained_addresses();
        if addresses.is_none() && self.ipam.is_none() {
            return Err(Error::invalid_config(
                "no IPAM plugin configured and no IPs in prevResult",
            ));
        }
        Ok(Plan {
            plugin: "ipvlan",
            master: self.master.clone(),
            link_in_container: self.link_in_container,
            kind: SubLinkKind::Ipvlan { mode: self.mode },
            mtu: Some(self.mtu).filter(|m| *m > 0),
            mac: None,
            ipam: if addresses.is_some() {
                None
            } else {
                self.ipam.clone()
            },
            addresses,
            notify_sysctls: true,
        })
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

    const BASE: &str = r#""cniVersion":"1.0.0","name":"n","type":"ipvlan""#;
    const IPAM: &str = r#""ipam":{"type":"host-local"}"#;

    #[test]
    fn defaults_and_keys() {
        let c = Conf::parse(&req(&format!("{{{BASE},{IPAM}}}"))).unwrap();
        assert_eq!(c.mode, IpvlanMode::L2);
        assert_eq!(
            (c.master.as_str(), c.mtu, c.link_in_container),
            ("", 0, false)
        );
        assert_eq!(c.chained_master().unwrap(), None);
        let c = Conf::parse(&req(&format!(
            r#"{{{BASE},{IPAM},"master":"lan0","mode":"l3s","mtu":1400,"linkInContainer":true}}"#
        )))
        .unwrap();
        assert_eq!(c.mode, IpvlanMode::L3s);
        assert_eq!(
            (c.master.as_str(), c.mtu, c.link_in_container),
            ("lan0", 1400, true)
        );
        let p = c.plan().unwrap();
        assert_eq!(p.mtu, Some(1400));
        assert_eq!(p.ipam.as_deref(), Some("host-local"));
        assert!(p.addresses.is_none());
    }

    #[test]
    fn chained_master_and_addresses_come_from_prev_result() {
        let prev = r#""prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"ens5"}],
            "ips":[{"address":"10.1.0.5/24","interface":0}]}"#;
        let c = Conf::parse(&req(&format!("{{{BASE},{prev}}}"))).unwrap();
        assert_eq!(c.chained_master().unwrap().as_deref(), Some("ens5"));
        let p = Conf {
            master: "ens5".into(),
            ..c
        }
        .plan()
        .unwrap();
        assert_eq!(p.ipam, None);
        assert_eq!(p.addresses.unwrap().ips.len(), 1);

        let two = r#""prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"a"},{"name":"b"}]}"#;
        let e = Conf::parse(&req(&format!("{{{BASE},{IPAM},{two}}}")))
            .unwrap()
            .chained_master()
            .unwrap_err();
        assert!(
            e.msg.contains("PrevResult lacks a single named interface"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn bad_values_are_config_errors() {
        for (extra, want) in [
            (r#""mode":"l4""#, "unknown ipvlan mode: \"l4\""),
            (r#""mtu":-1"#, "invalid MTU -1"),
        ] {
            let e = Conf::parse(&req(&format!("{{{BASE},{IPAM},{extra}}}"))).unwrap_err();
            assert_eq!(e.code, cni::code::INVALID_CONFIG);
            assert!(e.msg.contains(want), "{}", e.msg);
        }
        let e = Conf::parse(&req(&format!("{{{BASE}}}")))
            .unwrap()
            .plan()
            .unwrap_err();
        assert!(e.msg.contains("no IPAM"), "{}", e.msg);
    }

    /// The request ADD sends for `mode: l3`, `mtu: 1400` on parent index 9:
    /// RTM_NEWLINK with IFLA_IFNAME, IFLA_LINK, IFLA_MTU and
    /// IFLA_LINKINFO{kind ipvlan, data{IFLA_IPVLAN_MODE = 1}}.
    #[test]
    fn netlink_message_of_a_plan() {
        let c = Conf::parse(&req(&format!(
            r#"{{{BASE},{IPAM},"master":"lan0","mode":"l3","mtu":1400}}"#
        )))
        .unwrap();
        let p = c.plan().unwrap();
        let bytes = sublink_message_bytes(&SubLinkOptions {
            name: "eth0",
            kind: p.kind,
            parent_index: 9,
            mtu: p.mtu,
            mac: p.mac,
            target_ns: None,
        });
        let mut want = vec![0u8; 16]; // ifinfomsg: family, type, index, flags, change
        let nla = |t: u16, v: &[u8]| {
            let mut b = ((4 + v.len()) as u16).to_ne_bytes().to_vec();
            b.extend_from_slice(&t.to_ne_bytes());
            b.extend_from_slice(v);
            b.resize(b.len().div_ceil(4) * 4, 0);
            b
        };
        // The builder's order: name, link, mtu, then linkinfo.
        let mut attrs = Vec::new();
        attrs.extend(nla(3, b"eth0\0")); // IFLA_IFNAME
        attrs.extend(nla(5, &9u32.to_ne_bytes())); // IFLA_LINK
        attrs.extend(nla(4, &1400u32.to_ne_bytes())); // IFLA_MTU
        let data = nla(1, &1u16.to_ne_bytes()); // IFLA_IPVLAN_MODE l3
        let mut info = nla(1, b"ipvlan\0"); // IFLA_INFO_KIND
        info.extend(nla(2, &data)); // IFLA_INFO_DATA
        attrs.extend(nla(18, &info)); // IFLA_LINKINFO
        want.extend(attrs);
        assert_eq!(sorted_nlas(&bytes[16..]), sorted_nlas(&want[16..]));
        assert_eq!(bytes[..16], want[..16]);
    }

    /// Top-level attributes as byte strings, in a fixed order (the builder
    /// may order them differently from the kernel's documentation).
    fn sorted_nlas(mut b: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while b.len() >= 4 {
            let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
            let padded = len.div_ceil(4) * 4;
            out.push(b[..len].to_vec());
            b = &b[padded.min(b.len())..];
        }
        out.sort();
        out
    }
}
