//! The `ipam` keys of the dhcp plugin, and the DHCP options they turn into.
//!
//! Option names are the reference's six (`dhcp-client-identifier`,
//! `subnet-mask`, `routers`, `host-name`, `user-class`,
//! `vendor-class-identifier`) or a decimal code 0–255. Unlike the
//! reference, an unknown name is rejected when the plugin runs, with code 7
//! and the name in the message, before the daemon is asked for anything.

use cni::{CniArgs, Error, Result};
use serde::{Deserialize, Serialize};

/// The reference daemon's socket, which runtimes and units expect.
pub const DEFAULT_SOCKET_PATH: &str = "/run/cni/dhcp.sock";

/// Options asked for unless a `request` entry sets `skipDefault`:
/// routers (3) and subnet mask (1), in the reference's order.
const DEFAULT_REQUESTED: [u8; 2] = [3, 1];

const NAMED_OPTIONS: [(&str, u8); 6] = [
    ("dhcp-client-identifier", 61),
    ("subnet-mask", 1),
    ("routers", 3),
    ("host-name", 12),
    ("user-class", 77),
    ("vendor-class-identifier", 60),
];

#[derive(Debug, Clone, Default, Deserialize)]
struct NetConf {
    #[serde(default)]
    name: String,
    #[serde(default)]
    ipam: Option<IpamConf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IpamConf {
    #[serde(default)]
    daemon_socket_path: String,
    #[serde(default)]
    provide: Vec<ProvideOption>,
    #[serde(default)]
    request: Vec<RequestOption>,
    #[serde(default)]
    priority: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct ProvideOption {
    #[serde(default)]
    option: String,
    #[serde(default)]
    value: String,
    #[serde(default, rename = "fromArg")]
    from_arg: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RequestOption {
    #[serde(default, rename = "skipDefault")]
    skip_default: bool,
    #[serde(default)]
    option: String,
}

/// One option the client sends: a code and its raw value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentOption {
    pub code: u8,
    pub value: Vec<u8>,
}

/// What one attachment asks of the DHCP server, resolved from the
/// configuration and `CNI_ARGS`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LeaseOptions {
    /// `provide` entries, in order; a later entry for a code replaces an
    /// earlier one, as the reference's option list does.
    pub provide: Vec<SentOption>,
    /// The parameter request list (option 55).
    pub request: Vec<u8>,
}

/// The plugin's view of its configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    pub network: String,
    pub socket_path: String,
    pub options: LeaseOptions,
    /// Route metric for every route of the result (0: none).
    pub priority: u32,
}

/// A DHCP option name or decimal code.
pub fn parse_option_name(name: &str) -> Option<u8> {
    NAMED_OPTIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, c)| *c)
        .or_else(|| name.parse::<u8>().ok())
}

fn option_code(field: &str, i: usize, name: &str) -> Result<u8> {
    parse_option_name(name).ok_or_else(|| {
        Error::invalid_config(format!(
            "ipam.{field}[{i}].option: unknown DHCP option {name:?} (a name among {} or a code 0-255)",
            NAMED_OPTIONS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

fn push_option(list: &mut Vec<SentOption>, opt: SentOption) {
    list.retain(|o| o.code != opt.code);
    list.push(opt);
}

impl Config {
    /// Decode and validate stdin. `args` resolves `fromArg` values.
    pub fn parse(stdin: &[u8], args: &CniArgs) -> Result<Self> {
        let conf: NetConf = cni::config::parse_config(stdin)?;
        let ipam = conf
            .ipam
            .ok_or_else(|| Error::invalid_config("IPAM config missing 'ipam' key"))?;
        let mut options = LeaseOptions::default();
        for (i, p) in ipam.provide.iter().enumerate() {
            let code = option_code("provide", i, &p.option)?;
            let mut values = Vec::new();
            if !p.value.is_empty() {
                values.push(p.value.as_str());
            }
            if !p.from_arg.is_empty()
                && let Some(v) = args.get(&p.from_arg)
            {
                values.push(v);
            }
            for v in values {
                if v.len() > 255 {
                    return Err(Error::invalid_config(format!(
                        "ipam.provide[{i}]: value too long for option {:?} ({} bytes, at most 255)",
                        p.option,
                        v.len()
                    )));
                }
                push_option(
                    &mut options.provide,
                    SentOption {
                        code,
                        value: v.as_bytes().to_vec(),
                    },
                );
            }
        }
        let mut skip_default = false;
        for (i, r) in ipam.request.iter().enumerate() {
            skip_default |= r.skip_default;
            if r.option.is_empty() {
                continue;
            }
            let code = option_code("request", i, &r.option)?;
            if !options.request.contains(&code) {
                options.request.push(code);
            }
        }
        if !skip_default {
            for code in DEFAULT_REQUESTED {
                if !options.request.contains(&code) {
                    options.request.push(code);
                }
            }
        }
        let priority = u32::try_from(ipam.priority).map_err(|_| {
            Error::invalid_config(format!(
                "ipam.priority: {} is not a route metric (0-4294967295)",
                ipam.priority
            ))
        })?;
        let socket_path = if ipam.daemon_socket_path.is_empty() {
            DEFAULT_SOCKET_PATH.to_string()
        } else {
            ipam.daemon_socket_path
        };
        Ok(Config {
            network: conf.name,
            socket_path,
            options,
            priority,
        })
    }
}

/// The client identifier the reference sends: `containerID/network/ifname`,
/// cut to 254 bytes (option 61 holds at most 255 with its type byte).
pub fn client_id(container_id: &str, network: &str, ifname: &str) -> String {
    let mut id = format!("{container_id}/{network}/{ifname}");
    if id.len() > 254 {
        let mut cut = 254;
        while !id.is_char_boundary(cut) {
            cut -= 1;
        }
        id.truncate(cut);
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(ipam: &str, args: &str) -> Result<Config> {
        let stdin = format!(r#"{{"cniVersion":"1.0.0","name":"lan","ipam":{ipam}}}"#);
        Config::parse(stdin.as_bytes(), &CniArgs::parse(args)?)
    }

    #[test]
    fn defaults_request_routers_and_mask_on_the_default_socket() {
        let c = parse(r#"{"type":"dhcp"}"#, "").unwrap();
        assert_eq!(c.socket_path, DEFAULT_SOCKET_PATH);
        assert_eq!(c.options.request, vec![3, 1]);
        assert!(c.options.provide.is_empty());
        assert_eq!(c.network, "lan");
    }

    #[test]
    fn provide_takes_values_and_cni_args() {
        let c = parse(
            r#"{"type":"dhcp","provide":[{"option":"host-name","fromArg":"K8S_POD_NAME"},{"option":"60","value":"cni"}],
               "request":[{"option":"121"},{"skipDefault":true}]}"#,
            "K8S_POD_NAME=web-1",
        )
        .unwrap();
        assert_eq!(
            c.options.provide,
            vec![
                SentOption {
                    code: 12,
                    value: b"web-1".to_vec()
                },
                SentOption {
                    code: 60,
                    value: b"cni".to_vec()
                }
            ]
        );
        assert_eq!(c.options.request, vec![121]);
    }

    #[test]
    fn unknown_option_names_the_field_and_value() {
        let e = parse(r#"{"type":"dhcp","request":[{"option":"bogus"}]}"#, "").unwrap_err();
        assert_eq!(e.code, cni::code::INVALID_CONFIG);
        assert!(e.msg.contains("ipam.request[0].option"), "{}", e.msg);
        assert!(e.msg.contains("\"bogus\""), "{}", e.msg);
        let e = parse(
            r#"{"type":"dhcp","provide":[{"option":"256","value":"x"}]}"#,
            "",
        )
        .unwrap_err();
        assert!(e.msg.contains("ipam.provide[0].option"), "{}", e.msg);
    }

    #[test]
    fn client_id_is_cut_at_254_bytes() {
        let long = "c".repeat(300);
        assert_eq!(client_id(&long, "n", "eth0").len(), 254);
        assert_eq!(client_id("id", "net", "eth0"), "id/net/eth0");
    }
}
