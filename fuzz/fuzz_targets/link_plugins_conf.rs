//! The macvlan, ipvlan and vlan configuration parsers (each plugin's
//! `config::Conf::parse`, no kernel access) on arbitrary stdin and
//! CNI_ARGS, plus the plans and chained-master rules built from what they
//! accept. An error or a value, never a panic; an accepted MTU is never
//! negative and an accepted VLAN id is at most 4094.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    args: String,
    stdin: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let Ok(config) = cni::NetConf::from_slice(&input.stdin) else {
        return;
    };
    let Ok(args) = cni::CniArgs::parse(&input.args) else {
        return;
    };
    let req = cni::Request {
        command: cni::Command::Add,
        container_id: "fuzz".into(),
        netns: "/var/run/netns/fuzz".into(),
        ifname: "eth0".into(),
        args,
        path: vec![],
        config,
        stdin: input.stdin.clone(),
    };
    if let Ok(c) = macvlan::config::Conf::parse(&req) {
        let _ = c.plan();
    }
    if let Ok(c) = ipvlan::config::Conf::parse(&req) {
        let _ = c.chained_master();
        let _ = c.plan();
    }
    if let Ok(c) = vlan::config::Conf::parse(&req) {
        assert!(c.vlan_id <= 4094);
        let _ = c.plan();
    }
});
