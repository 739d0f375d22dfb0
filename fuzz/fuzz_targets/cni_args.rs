//! CNI_ARGS parsing, the plugin side (cni::CniArgs) and the runtime side
//! (runtime::attachment::parse_cni_args / format_cni_args): no panic, and
//! what the runtime formats parses back to the same pairs on both sides.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(args) = cni::CniArgs::parse(text) {
        let _ = args.ignore_unknown();
        let _ = args.check_known(&["IP", "MAC", "K8S_POD_NAME"]);
        for (k, _) in args.pairs() {
            assert!(args.get(k).is_some());
        }
    }
    if let Ok(pairs) = runtime::attachment::parse_cni_args(text) {
        let formatted = runtime::attachment::format_cni_args(&pairs);
        let again = runtime::attachment::parse_cni_args(&formatted).unwrap_or_else(|e| {
            panic!("{formatted:?} (formatted from {text:?}) does not parse: {e}")
        });
        assert_eq!(pairs, again);
        let plugin_side = cni::CniArgs::parse(&formatted).unwrap_or_else(|e| {
            panic!("the runtime sends {formatted:?}, the plugin refuses it: {e}")
        });
        assert_eq!(plugin_side.pairs(), &pairs[..]);
    }
});
