//! static IPAM's configuration (`ipam.addresses`, `routes`, `dns`, CNI_ARGS
//! `IP`/`GATEWAY`, `args.cni.ips`, `runtimeConfig.ips`): any input is
//! either refused or gives addresses whose result prints in every version
//! that can carry it.
#![no_main]

#[path = "../../plugins/ipam/static/src/config.rs"]
#[allow(dead_code)]
mod config;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    args: String,
    stdin: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let Ok(conf) = cni::NetConf::from_slice(&input.stdin) else {
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
        path: Vec::new(),
        config: conf,
        stdin: input.stdin,
    };
    let Ok(c) = config::Config::load(&req) else {
        return;
    };
    let result = cni::CniResult {
        interfaces: Vec::new(),
        ips: c.addresses,
        routes: c.routes,
        dns: c.dns,
    };
    for v in ["0.2.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        if let Ok(printed) = result.to_value(v) {
            cni::CniResult::from_value(printed, v).expect("a printed result parses back");
        }
    }
});
