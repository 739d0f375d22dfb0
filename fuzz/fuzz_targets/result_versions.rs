//! Results in every spec version: parse, convert to every other version,
//! parse the conversion back. Invariants: no panic; whatever one version
//! prints, the same version parses; printing is stable (print → parse →
//! print gives the same JSON).
#![no_main]

use libfuzzer_sys::fuzz_target;

const VERSIONS: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, json)) = data.split_first() else {
        return;
    };
    let from = VERSIONS[usize::from(selector) % VERSIONS.len()];
    let Ok(result) = cni::CniResult::from_slice(json, from) else {
        return;
    };
    let _ = result.to_current();
    for to in VERSIONS {
        let Ok(printed) = result.to_value(to) else {
            continue;
        };
        let reparsed = cni::CniResult::from_value(printed.clone(), to)
            .unwrap_or_else(|e| panic!("{to} cannot parse its own output {printed}: {e}"));
        let again = reparsed
            .to_value(to)
            .unwrap_or_else(|e| panic!("{to} printed once, not twice: {e}"));
        assert_eq!(printed, again, "printing in {to} is not stable");
    }
});
