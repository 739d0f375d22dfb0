//! sbr's configuration (`table`, `gateways`, `addSourceHints`) and the
//! choice of prevResult addresses for an interface: no panic; an accepted
//! table is never the kernel's unspecified, default, main or local table,
//! and at most one gateway per family is kept.
#![no_main]

#[path = "../../plugins/meta/sbr/src/config.rs"]
#[allow(dead_code)]
mod config;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|stdin: &[u8]| {
    let Ok(conf) = cni::NetConf::from_slice(stdin) else {
        return;
    };
    let req = cni::Request {
        command: cni::Command::Add,
        container_id: "fuzz".into(),
        netns: "/var/run/netns/fuzz".into(),
        ifname: "eth1".into(),
        args: cni::CniArgs::default(),
        path: Vec::new(),
        config: conf,
        stdin: stdin.to_vec(),
    };
    let _ = req.prev_result();
    let Ok(c) = config::Config::load(&req) else {
        return;
    };
    if let Some(t) = c.table {
        assert!(t != 0 && !(253..=255).contains(&t), "table {t}");
    }
    assert!(c.gateways.v4.is_none_or(|g| g.is_ipv4()));
    assert!(c.gateways.v6.is_none_or(|g| g.is_ipv6()));
});
