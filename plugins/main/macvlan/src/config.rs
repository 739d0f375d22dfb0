//! The macvlan plugin's keys, defaults and validation, with the reference's
//! messages. The checks that need no kernel come first ([`Conf::parse`]);
//! [`Conf::resolve`] then finds the master and checks the MTU against it.

use attach::sublink::Plan;
use cni::{Error, Request, Result};
use link::{MacAddr, MacvlanMode, SubLinkKind};
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
    mac: String,
    #[serde(default)]
    link_in_container: bool,
    #[serde(default)]
    bcqueuelen: u32,
}

/// Validated settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conf {
    /// Empty: the interface of the default route.
    pub master: String,
    pub mode: MacvlanMode,
    /// 0: the master's.
    pub mtu: u32,
    pub mac: Option<MacAddr>,
    pub link_in_container: bool,
    pub bcqueuelen: u32,
    pub ipam: Option<String>,
}

impl Conf {
    /// Everything that can be checked without the kernel.
    pub fn parse(req: &Request) -> Result<Conf> {
        let raw: RawConf = req.plugin_config()?;
        let mode = MacvlanMode::parse(&raw.mode).ok_or_else(|| {
            Error::invalid_config(format!("unknown macvlan mode: {:?}", raw.mode))
        })?;
        let mtu = attach::sublink::parse_mtu(raw.mtu)?;
        req.args.check_known(&["MAC"])?;
        // `mac` < CNI_ARGS `MAC` < `runtimeConfig.mac`, as in the reference.
        let runtime_mac = req
            .config
            .runtime_config
            .as_ref()
            .and_then(|r| r.mac.as_deref())
            .filter(|m| !m.is_empty());
        let args_mac = req.args.get("MAC").filter(|m| !m.is_empty());
        let text = runtime_mac
            .or(args_mac)
            .or(Some(raw.mac.as_str()).filter(|m| !m.is_empty()));
        let mac = match text {
            None => None,
            Some(t) => Some(t.parse::<MacAddr>().map_err(|e| {
                Error::invalid_config(format!("invalid args {t} for MAC addr: {e}"))
            })?),
        };
        Ok(Conf {
            master: raw.master,
            mode,
            mtu,
            mac,
            link_in_container: raw.link_in_container,
            bcqueuelen: raw.bcqueuelen,
            ipam: req.config.ipam_type().map(str::to_string),
        })
    }

    /// Find the master (the default route's interface when none is given)
    /// and check `mtu` against it.
    pub fn resolve(mut self, req: &Request) -> Result<Conf> {
        self.master = attach::sublink::resolve_master(req, &self.master, self.link_in_container)?;
        attach::sublink::check_mtu(req, &self.master, self.link_in_container, self.mtu)?;
        Ok(self)
    }

    pub fn plan(&self) -> Plan {
        Plan {
            plugin: "macvlan",
            master: self.master.clone(),
            link_in_container: self.link_in_container,
            kind: SubLinkKind::Macvlan {
                mode: self.mode,
                bcqueuelen: Some(self.bcqueuelen).filter(|q| *q > 0),
            },
            mtu: Some(self.mtu).filter(|m| *m > 0),
            mac: self.mac,
            ipam: self.ipam.clone(),
            addresses: None,
            notify_sysctls: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::Command;

    fn req(conf: &str, args: &str) -> Request {
        let mut r = Request::from_config(Command::Add, conf.as_bytes(), args).unwrap();
        r.container_id = "c1".into();
        r.netns = "/var/run/netns/x".into();
        r
    }

    const BASE: &str = r#""cniVersion":"1.0.0","name":"n","type":"macvlan""#;

    #[test]
    fn defaults_are_the_reference_defaults() {
        let c = Conf::parse(&req(&format!("{{{BASE}}}"), "")).unwrap();
        assert_eq!(c.master, "");
        assert_eq!(c.mode, MacvlanMode::Bridge);
        assert_eq!((c.mtu, c.bcqueuelen, c.link_in_container), (0, 0, false));
        assert_eq!((c.mac, c.ipam.as_deref()), (None, None));
        let p = c.plan();
        assert_eq!(p.mtu, None);
        assert_eq!(
            p.kind,
            SubLinkKind::Macvlan {
                mode: MacvlanMode::Bridge,
                bcqueuelen: None
            }
        );
    }

    #[test]
    fn every_key_is_read() {
        let conf = format!(
            r#"{{{BASE},"master":"lan0","mode":"vepa","mtu":1400,"mac":"02:00:00:00:00:01",
            "linkInContainer":true,"bcqueuelen":100,"ipam":{{"type":"host-local"}}}}"#
        );
        let c = Conf::parse(&req(&conf, "")).unwrap();
        assert_eq!(c.master, "lan0");
        assert_eq!(c.mode, MacvlanMode::Vepa);
        assert_eq!(c.mtu, 1400);
        assert_eq!(c.mac, Some("02:00:00:00:00:01".parse().unwrap()));
        assert!(c.link_in_container);
        assert_eq!(c.bcqueuelen, 100);
        assert_eq!(c.ipam.as_deref(), Some("host-local"));
        for m in ["bridge", "private", "vepa", "passthru", "source"] {
            let conf = format!(r#"{{{BASE},"mode":"{m}"}}"#);
            assert_eq!(Conf::parse(&req(&conf, "")).unwrap().mode.to_string(), m);
        }
    }

    #[test]
    fn mac_from_args_then_runtime_config_win() {
        let conf = format!(r#"{{{BASE},"mac":"02:00:00:00:00:01"}}"#);
        let c = Conf::parse(&req(&conf, "MAC=02:00:00:00:00:02")).unwrap();
        assert_eq!(c.mac, Some("02:00:00:00:00:02".parse().unwrap()));
        let conf = format!(
            r#"{{{BASE},"mac":"02:00:00:00:00:01","runtimeConfig":{{"mac":"02:00:00:00:00:03"}}}}"#
        );
        let c = Conf::parse(&req(&conf, "MAC=02:00:00:00:00:02")).unwrap();
        assert_eq!(c.mac, Some("02:00:00:00:00:03".parse().unwrap()));
    }

    #[test]
    fn bad_values_are_config_errors_naming_them() {
        let cases = [
            (
                format!(r#"{{{BASE},"mode":"l2"}}"#),
                "",
                "unknown macvlan mode: \"l2\"",
            ),
            (format!(r#"{{{BASE},"mtu":-1}}"#), "", "invalid MTU -1"),
            (
                format!(r#"{{{BASE},"mac":"zz"}}"#),
                "",
                "invalid args zz for MAC addr",
            ),
            (
                format!("{{{BASE}}}"),
                "MAC=1:2",
                "invalid args 1:2 for MAC addr",
            ),
        ];
        for (conf, args, want) in cases {
            let e = Conf::parse(&req(&conf, args)).unwrap_err();
            assert_eq!(e.code, cni::code::INVALID_CONFIG, "{conf}");
            assert!(e.msg.contains(want), "{} !~ {want}", e.msg);
        }
        let e = Conf::parse(&req(&format!("{{{BASE}}}"), "FOO=1")).unwrap_err();
        assert!(e.msg.contains("FOO"), "{}", e.msg);
        assert!(Conf::parse(&req(&format!("{{{BASE}}}"), "IgnoreUnknown=1;FOO=1")).is_ok());
        let e = Conf::parse(&req(&format!(r#"{{{BASE},"bcqueuelen":-5}}"#), "")).unwrap_err();
        assert!(e.msg.contains("bcqueuelen"), "{}", e.msg);
    }
}
