//! tuning's configuration parser (the plugin's own `config.rs`, and the
//! on-disk record reader of `record.rs`): any configuration text, ifname
//! and CNI_ARGS give an error or a configuration whose sysctl paths stay
//! under `net/` with no empty, `.` or `..` component — never a panic.
#![no_main]

#[path = "../../plugins/meta/tuning/src/config.rs"]
#[allow(dead_code)]
mod config;
#[path = "../../plugins/meta/tuning/src/record.rs"]
#[allow(dead_code)]
mod record;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    ifname: String,
    cni_args: String,
    body: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let _ = config::check_duplicates(&input.body);
    let _ = serde_json::from_slice::<record::Record>(&input.body);
    let Ok(conf) = cni::NetConf::from_slice(&input.body) else {
        return;
    };
    let Ok(args) = cni::CniArgs::parse(&input.cni_args) else {
        return;
    };
    // The skeleton refuses these ifnames before a plugin runs.
    if cni::env::validate_ifname(&input.ifname).is_err() {
        return;
    }
    let req = cni::Request {
        command: cni::Command::Add,
        container_id: "fuzz".into(),
        netns: "/run/netns/fuzz".into(),
        ifname: input.ifname.clone(),
        args,
        path: vec![],
        config: conf,
        stdin: input.body.clone(),
    };
    let _ = config::data_dir(&req);
    if let Ok(c) = config::parse(&req) {
        for s in &c.sysctls {
            assert!(s.path.starts_with("net/"), "{s:?}");
            assert!(
                s.path
                    .split('/')
                    .all(|p| !p.is_empty() && p != "." && p != ".."),
                "{s:?}"
            );
        }
        if let Some(m) = c.mtu {
            assert!((68..=65535).contains(&m));
        }
    }
});
