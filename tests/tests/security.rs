//! Security properties of the plugins:
//! - network names, container ids and interface names never lead outside
//!   host-local's dataDir;
//! - values that end up in netfilter rules (container id, network name,
//!   hostIP) are data, never options;
//! - state files (reservations, the runtime's result cache) are 0600 (the
//!   empty lock file only needs to be unwritable by others);
//! - no plugin ever runs a shell, and the programs they run are the expected
//!   few (strace -f on every verb, both backends).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;

use integration::{Invocation, Netns, can_run, plugin, temp_dir};
use serde_json::{Value, json};

fn bridge_conf(name: &str, data: &Path, backend: &str) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": "sec0",
        "isGateway": true, "ipMasq": true, "ipMasqBackend": backend,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.55.0.0/24"}]], "dataDir": data},
    })
}

fn portmap_conf(name: &str, prev: &Value, backend: &str, host_ip: Option<&str>) -> Value {
    let mut m = json!({"hostPort": 8080, "containerPort": 80, "protocol": "tcp"});
    if let Some(ip) = host_ip {
        m["hostIP"] = json!(ip);
    }
    json!({
        "cniVersion": "1.0.0", "name": name, "type": "portmap", "backend": backend,
        "runtimeConfig": {"portMappings": [m]}, "prevResult": prev,
    })
}

#[test]
fn names_and_ids_never_escape_the_data_dir() {
    if !can_run() {
        return;
    }
    let host = Netns::new("cnit-sec-host");
    let ctr = Netns::bare("cnit-sec-ctr");
    let outer = temp_dir("cnit-sec-outer");
    let data = outer.path().join("data");
    let hostile_names = [
        "../escape",
        "..",
        ".",
        "a/../../escape",
        "/tmp/escape",
        "escape/..",
    ];
    for plug in ["host-local", "bridge"] {
        for name in hostile_names {
            let mut conf = bridge_conf(name, &data, "iptables");
            if plug == "host-local" {
                conf = json!({"cniVersion": "1.0.0", "name": name, "type": "host-local", "ipam": conf["ipam"].clone()});
            }
            let out = Invocation::new(plugin(plug), "ADD")
                .container_id("sec1")
                .netns(&ctr)
                .config(&conf)
                .run(&host);
            out.expect_err(7);
        }
        let good = if plug == "host-local" {
            json!({"cniVersion": "1.0.0", "name": "secnet", "type": "host-local", "ipam": bridge_conf("x", &data, "iptables")["ipam"].clone()})
        } else {
            bridge_conf("secnet", &data, "iptables")
        };
        for id in ["../../escape", "a/b", "..", "x y"] {
            let out = Invocation::new(plugin(plug), "ADD")
                .container_id(id)
                .netns(&ctr)
                .config(&good)
                .run(&host);
            out.expect_err(4);
        }
        for ifname in ["../escape", "a/b", "..", "."] {
            let out = Invocation::new(plugin(plug), "ADD")
                .container_id("sec1")
                .ifname(ifname)
                .netns(&ctr)
                .config(&good)
                .run(&host);
            out.expect_err(4);
        }
    }
    let outside: Vec<String> = integration::dir_tree(outer.path())
        .into_iter()
        .filter(|p| !p.starts_with("data"))
        .collect();
    assert_eq!(outside, Vec::<String>::new(), "created outside dataDir");
    assert!(!Path::new("/tmp/escape").exists());
    assert!(
        !integration::dir_tree(&data)
            .iter()
            .any(|p| p.contains("escape")),
        "{:?}",
        integration::dir_tree(&data)
    );
}

/// `text` without its double-quoted strings (comments, nft strings);
/// `\"` inside a string is an escaped quote, as iptables-save writes it.
fn unquoted(text: &str) -> String {
    let mut out = String::new();
    let mut quoted = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '\\') => {
                chars.next();
            }
            (_, '"') => quoted = !quoted,
            (false, _) => out.push(c),
            (true, _) => {}
        }
    }
    out
}

#[test]
fn names_and_ids_are_never_netfilter_arguments() {
    if !can_run() {
        return;
    }
    // Valid by the spec's character rules, and option-shaped.
    let id = "c--jump--ACCEPT";
    let name = "n--jump-ACCEPT";
    for backend in ["iptables", "nftables"] {
        let host = Netns::new("cnit-sec-host");
        let ctr = Netns::bare("cnit-sec-ctr");
        let data = temp_dir("cnit-sec-ipam");
        let br = bridge_conf(name, data.path(), backend);
        let prev = Invocation::new(plugin("bridge"), "ADD")
            .container_id(id)
            .netns(&ctr)
            .config(&br)
            .run(&host)
            .expect_ok();
        let pm = portmap_conf(name, &prev, backend, None);
        Invocation::new(plugin("portmap"), "ADD")
            .container_id(id)
            .netns(&ctr)
            .config(&pm)
            .run(&host)
            .expect_ok();
        let rules = host.netfilter();
        assert!(
            rules.contains(id) || rules.contains(name) || !rules.is_empty(),
            "no rules at all?"
        );
        let bare = unquoted(&rules);
        for token in [id, name, "--jump"] {
            assert!(
                !bare.contains(token),
                "{backend}: {token:?} outside a quoted string:\n{rules}"
            );
        }
        // hostIP is an address or an error, never text in a rule.
        let bad = portmap_conf(name, &prev, backend, Some("1.2.3.4 -j ACCEPT"));
        Invocation::new(plugin("portmap"), "ADD")
            .container_id("c2")
            .netns(&ctr)
            .config(&bad)
            .run(&host)
            .expect_err(7);
        assert_eq!(
            host.netfilter(),
            rules,
            "{backend}: a refused hostIP changed the rules"
        );
        Invocation::new(plugin("portmap"), "DEL")
            .container_id(id)
            .netns(&ctr)
            .config(&pm)
            .run(&host)
            .expect_ok();
        let mut del = br.clone();
        del["prevResult"] = prev;
        Invocation::new(plugin("bridge"), "DEL")
            .container_id(id)
            .netns(&ctr)
            .config(&del)
            .run(&host)
            .expect_ok();
        let left = host.netfilter();
        assert!(!left.contains(id), "{backend}: rules of {id} left:\n{left}");
    }
}

#[test]
fn state_files_are_private() {
    if !can_run() {
        return;
    }
    let host = Netns::new("cnit-sec-host");
    let ctr = Netns::bare("cnit-sec-ctr");
    let state = temp_dir("cnit-sec-state");
    let conf_dir = state.path().join("net.d");
    let data = state.path().join("ipam");
    let cache = state.path().join("cache");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let list = json!({
        "cniVersion": "1.0.0", "name": "secnet",
        "plugins": [
            {"type": "bridge", "bridge": "sec0", "isGateway": true, "ipMasq": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.55.0.0/24"}]], "dataDir": data}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    });
    std::fs::write(conf_dir.join("10-sec.conflist"), list.to_string()).unwrap();
    let cnictl = |verb: &str| {
        let out = host
            .command(plugin("cnictl"))
            .args(["--conf-dir"])
            .arg(&conf_dir)
            .args(["--cache-dir"])
            .arg(&cache)
            .args(["--cni-path"])
            .arg(integration::bin_dir())
            .args(["--container-id", "sec1", verb, "secnet"])
            .arg(ctr.path())
            .env(
                "CAP_ARGS",
                r#"{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}"#,
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cnictl {verb}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    cnictl("add");
    let mut files = 0;
    for root in [&data, &cache] {
        for rel in integration::dir_tree(root) {
            let p = root.join(&rel);
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_file() {
                files += 1;
                let mode = meta.permissions().mode() & 0o777;
                if meta.len() == 0 {
                    // An empty file (host-local's flock target) holds
                    // nothing to read; nobody else may write it.
                    assert_eq!(mode & 0o022, 0, "{} is {mode:o}", p.display());
                } else {
                    assert_eq!(mode & 0o077, 0, "{} is {mode:o}", p.display());
                }
            }
        }
    }
    assert!(
        files >= 3,
        "expected reservation, lock and cache files: {:?} {:?}",
        integration::dir_tree(&data),
        integration::dir_tree(&cache)
    );
    cnictl("del");
}

/// Run one plugin under `strace -f`; its stdout and every program exec'd.
fn traced(
    plug: &str,
    verb: &str,
    conf: &Value,
    ctr: &Netns,
    host: &Netns,
) -> (String, Vec<String>) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = host
        .command("strace")
        .args(["-f", "-qq", "-e", "trace=execve", "-e", "signal=none", "-o"])
        .arg(log.path())
        .arg(plugin(plug))
        .env_clear()
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        )
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", "shell1")
        .env("CNI_NETNS", ctr.path_str())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", integration::bin_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{plug} {verb}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(log.path()).unwrap();
    // Every execve attempt counts (a failed exec of /bin/sh is still an
    // attempt to run a shell); the program is the first quoted string.
    let progs = text
        .lines()
        .filter_map(|l| l.split_once("execve(\"").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split('"').next())
        .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
        .collect();
    (String::from_utf8_lossy(&out.stdout).into_owned(), progs)
}

#[test]
fn no_plugin_runs_a_shell() {
    if !can_run() {
        return;
    }
    if !std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("SKIPPED: strace not installed (apt-get install strace)");
        return;
    }
    const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ash", "busybox", "ksh"];
    let allowed = |p: &str| {
        [
            "bridge",
            "host-local",
            "portmap",
            "loopback",
            "firewall",
            "nft",
        ]
        .contains(&p)
            || p.starts_with("iptables")
            || p.starts_with("ip6tables")
            || p.starts_with("xtables")
    };
    let mut seen = std::collections::BTreeSet::new();
    for backend in ["iptables", "nftables"] {
        let host = Netns::new("cnit-sec-host");
        let ctr = Netns::bare("cnit-sec-ctr");
        let data = temp_dir("cnit-sec-ipam");
        let br = bridge_conf("shellnet", data.path(), backend);
        let (stdout, mut progs) = traced("bridge", "ADD", &br, &ctr, &host);
        let prev: Value = serde_json::from_str(&stdout).unwrap();
        let pm = portmap_conf("shellnet", &prev, backend, None);
        progs.extend(traced("portmap", "ADD", &pm, &ctr, &host).1);
        let mut brc = br.clone();
        brc["prevResult"] = prev.clone();
        progs.extend(traced("bridge", "CHECK", &brc, &ctr, &host).1);
        progs.extend(traced("portmap", "CHECK", &pm, &ctr, &host).1);
        // firewall runs nothing but itself, on either backend.
        let fw = json!({"cniVersion": "1.0.0", "name": "shellnet", "type": "firewall",
            "backend": backend, "ingressPolicy": "same-bridge",
            "dataDir": data.path().join("firewall"), "prevResult": prev});
        for verb in ["ADD", "CHECK", "DEL"] {
            let fw_progs = traced("firewall", verb, &fw, &ctr, &host).1;
            assert_eq!(fw_progs, vec!["firewall"], "{backend} firewall {verb}");
        }
        progs.extend(traced("portmap", "DEL", &pm, &ctr, &host).1);
        progs.extend(traced("bridge", "DEL", &brc, &ctr, &host).1);
        let lo = json!({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"});
        let lo_ctr = Netns::bare("cnit-sec-lo");
        progs.extend(traced("loopback", "ADD", &lo, &lo_ctr, &host).1);
        progs.extend(traced("loopback", "DEL", &lo, &lo_ctr, &host).1);
        for p in &progs {
            assert!(
                !SHELLS.contains(&p.as_str()),
                "{backend}: a plugin exec'd a shell ({p}); all execs: {progs:?}"
            );
            assert!(
                allowed(p),
                "{backend}: unexpected program {p:?}; all execs: {progs:?}"
            );
        }
        seen.extend(progs);
    }
    eprintln!("programs exec'd: {seen:?}");
}
