//! bandwidth's configuration parser (`bandwidth::config::parse`): top-level
//! keys and the `runtimeConfig.bandwidth` capability, matched as Go matches
//! them. Any input: an error or limits the kernel can take, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(bw) = bandwidth::config::parse(data) {
        // Whatever the parser accepts yields a token bucket.
        for l in [bw.ingress, bw.egress] {
            if l.is_set() {
                assert!(bandwidth::tbf_params(&l, bandwidth::DEFAULT_TICKS_PER_USEC).is_some());
            }
        }
    }
});
