//! Network configuration parsing, as a plugin (cni::NetConf) and as a
//! runtime (runtime::NetworkConfigList, list and single-plugin forms) sees
//! it. Any input: an error or a value, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(conf) = cni::NetConf::from_slice(data) {
        // The helpers plugins call on a parsed configuration.
        let _ = conf.ipam_type();
        let _ = conf.gc_attachments();
        let _ = conf.requested_mac();
        let _ = conf.port_mappings();
    }
    let _ = cni::config::parse_config::<serde_json::Value>(data);
    if let Ok(list) = runtime::NetworkConfigList::from_bytes(data, "fuzz") {
        let _ = list.declared_versions();
    }
    let _ = runtime::NetworkConfigList::from_single_plugin_bytes(data, "fuzz");
});
