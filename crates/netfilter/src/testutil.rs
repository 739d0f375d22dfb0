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
