//! Helpers of the unit tests that drive the real netfilter tools.

use std::io::Write;

/// Run `program` with `args` and `stdin` as its input; its stdout. Panics
/// unless it succeeds.
pub fn run_with_input(program: &str, args: &[&str], stdin: &str) -> String {
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Like [`run_with_input`], with no input.
pub fn run(program: &str, args: &[&str]) -> String {
    run_with_input(program, args, "")
}

/// Run `f` on a thread inside a throwaway network namespace, removed
/// afterwards (also when `f` panics).
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    let ns = netns::TempNetns::new(name).expect("create a netns");
    let handle = ns.open().expect("open the netns");
    handle.run(f).expect("test body ran in the netns")
}

/// The host-port attachment the CHECK tests set up: network "n", the given
/// IPv4 address in a /24 plus 2001:db8::2/64, mark-bit SNAT.
pub fn hostports<'a>(
    cid: &'a str,
    ip: &str,
    maps: &'a [crate::hostports::PortMapping],
) -> crate::hostports::HostPorts<'a> {
    crate::hostports::HostPorts {
        network: "n",
        container_id: cid,
        ipv4: Some(format!("{ip}/24").parse().expect("address")),
        ipv6: Some("2001:db8::2/64".parse().expect("address")),
        mappings: maps,
        snat: crate::hostports::Snat::MarkBit(13),
        masq_all: false,
        conditions_v4: &[],
        conditions_v6: &[],
    }
}
