//! The dhcp plugin's `ipam` keys (`dhcp::config::Config::parse`) with any
//! stdin and `CNI_ARGS`, and the daemon's flags (`dhcp::flags::parse`):
//! no panic; an accepted configuration has a socket path, at most 255
//! bytes per provided value, and a client id of at most 254 bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&[u8], &str, Vec<String>)| {
    let (stdin, args, flags) = input;
    if let Ok(args) = cni::CniArgs::parse(args)
        && let Ok(conf) = dhcp::config::Config::parse(stdin, &args)
    {
        assert!(!conf.socket_path.is_empty());
        assert!(conf.options.provide.iter().all(|o| o.value.len() <= 255));
        let id = dhcp::config::client_id(&conf.network, &conf.network, &conf.socket_path);
        assert!(id.len() <= 254);
    }
    let _ = dhcp::flags::parse(&flags);
});
