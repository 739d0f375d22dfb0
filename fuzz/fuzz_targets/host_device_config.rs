//! host-device's configuration (`device`, `hwaddr`, `kernelpath`,
//! `pciBusID`, `runtimeConfig.deviceID`): no panic, and a kernel path or
//! device ID that is accepted never leads outside /sys.
#![no_main]

#[path = "../../plugins/main/host-device/src/config.rs"]
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
        ifname: "net1".into(),
        args: cni::CniArgs::default(),
        path: Vec::new(),
        config: conf,
        stdin: stdin.to_vec(),
    };
    let Ok(c) = config::Config::load(&req) else {
        return;
    };
    match &c.selector {
        config::Selector::KernelPath(p) => {
            let s = p.to_string_lossy();
            assert!(s.starts_with("/sys/devices/") && !s.contains("/../"), "{s}");
        }
        config::Selector::Pci(id) | config::Selector::Auxiliary(id) => {
            assert!(!id.contains('/'), "{id}");
        }
        _ => {}
    }
});
