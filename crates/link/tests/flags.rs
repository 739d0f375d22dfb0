//! Interface flags and addresses through ioctls and getifaddrs, inside a
//! throwaway namespace.

use link::flags;
use netns::TempNetns;

#[test]
fn lo_goes_up_and_down_and_lists_its_addresses() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let tmp = TempNetns::new("link-flags").unwrap();
    let ns = tmp.open().unwrap();
    ns.run(|| {
        assert_eq!(flags::is_up("lo").unwrap(), Some(false));
        assert!(flags::addresses_of("lo").unwrap().is_empty());
        flags::set_up("lo", true).unwrap();
        flags::set_up("lo", true).unwrap();
        assert_eq!(flags::is_up("lo").unwrap(), Some(true));
        let addrs: Vec<String> = flags::addresses_of("lo")
            .unwrap()
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert!(addrs.contains(&"127.0.0.1/8".to_string()), "{addrs:?}");
        assert!(addrs.contains(&"::1/128".to_string()), "{addrs:?}");
        flags::set_up("lo", false).unwrap();
        assert_eq!(flags::is_up("lo").unwrap(), Some(false));
        assert_eq!(flags::is_up("nope0").unwrap(), None);
        let e = flags::set_up("nope0", true).unwrap_err();
        assert_eq!(e.errno(), Some(nix::libc::ENODEV), "{e}");
        assert!(e.to_string().contains("nope0"), "{e}");
        assert!(flags::set_up("a/very/long/interface/name", true).is_err());
    })
    .unwrap();
}
