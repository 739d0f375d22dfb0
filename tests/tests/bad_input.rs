//! A table of bad inputs run against every plugin binary of the workspace:
//! each gets its CNI error code, a message naming the offending field or
//! value, a non-zero exit — and changes nothing on the system.

use integration::{Invocation, Netns, PLUGINS, Topology, can_run, plugin};
use serde_json::{Value, json};

struct Row {
    what: &'static str,
    command: &'static str,
    stdin: Vec<u8>,
    env: Vec<(&'static str, &'static str)>,
    unset: Vec<&'static str>,
    code: u64,
    /// A substring the message or details must contain.
    names: &'static str,
}

fn conf(plugin: &str, version: &str, name: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "cniVersion": version,
        "name": name,
        "type": plugin,
        "ipam": {"type": "host-local", "subnet": "10.250.0.0/24"}
    }))
    .unwrap()
}

fn rows(p: &str) -> Vec<Row> {
    let ok = || conf(p, "1.0.0", "badnet");
    let row = |what, command, stdin, code, names| Row {
        what,
        command,
        stdin,
        env: vec![],
        unset: vec![],
        code,
        names,
    };
    vec![
        row(
            "malformed JSON",
            "ADD",
            b"{\"cniVersion\":".to_vec(),
            6,
            "unmarshall",
        ),
        row(
            "truncated JSON",
            "DEL",
            b"{\"name\":\"x\"".to_vec(),
            6,
            "unmarshall",
        ),
        row("not an object", "ADD", b"[1,2]".to_vec(), 6, "object"),
        row(
            "missing name",
            "ADD",
            serde_json::to_vec(&json!({"cniVersion":"1.0.0","type":p})).unwrap(),
            7,
            "name",
        ),
        row(
            "network name escaping a directory",
            "ADD",
            conf(p, "1.0.0", "../x"),
            7,
            "../x",
        ),
        row(
            "network name with a slash",
            "DEL",
            conf(p, "1.0.0", "a/b"),
            7,
            "a/b",
        ),
        row(
            "unknown cniVersion",
            "ADD",
            conf(p, "9.9.9", "badnet"),
            1,
            "9.9.9",
        ),
        row(
            "malformed cniVersion",
            "ADD",
            conf(p, "1.0", "badnet"),
            6,
            "1.0",
        ),
        row(
            "CHECK on 0.3.1",
            "CHECK",
            conf(p, "0.3.1", "badnet"),
            1,
            "CHECK",
        ),
        row("GC on 1.0.0", "GC", conf(p, "1.0.0", "badnet"), 1, "GC"),
        row(
            "STATUS on 0.4.0",
            "STATUS",
            conf(p, "0.4.0", "badnet"),
            1,
            "STATUS",
        ),
        row("unknown verb", "FROB", ok(), 4, "FROB"),
        Row {
            env: vec![("CNI_CONTAINERID", "bad id;rm")],
            ..row("bad container id", "ADD", ok(), 4, "bad id;rm")
        },
        Row {
            env: vec![("CNI_CONTAINERID", "../../etc")],
            ..row("container id with a path", "DEL", ok(), 4, "../../etc")
        },
        Row {
            env: vec![("CNI_IFNAME", "eth0/../x")],
            ..row("ifname with a slash", "ADD", ok(), 4, "eth0/../x")
        },
        Row {
            env: vec![("CNI_IFNAME", "averyveryverylongname")],
            ..row("ifname too long", "ADD", ok(), 4, "too long")
        },
        Row {
            env: vec![("CNI_IFNAME", "..")],
            ..row("ifname ..", "DEL", ok(), 4, "..")
        },
        Row {
            unset: vec!["CNI_CONTAINERID"],
            ..row("missing CNI_CONTAINERID", "ADD", ok(), 4, "CNI_CONTAINERID")
        },
        Row {
            unset: vec!["CNI_NETNS"],
            ..row("missing CNI_NETNS", "ADD", ok(), 4, "CNI_NETNS")
        },
        Row {
            unset: vec!["CNI_PATH", "CNI_IFNAME"],
            ..row(
                "missing CNI_PATH and CNI_IFNAME",
                "DEL",
                ok(),
                4,
                "CNI_PATH",
            )
        },
        Row {
            env: vec![("CNI_ARGS", "IgnoreUnknown=1;novalue")],
            ..row("malformed CNI_ARGS", "ADD", ok(), 4, "novalue")
        },
        row(
            "wrong type for ipMasq",
            "ADD",
            serde_json::to_vec(
                &json!({"cniVersion":"1.0.0","name":"badnet","type":p,"ipMasq":"yes"}),
            )
            .unwrap(),
            7,
            "ipMasq",
        ),
    ]
}

fn message(v: &Value) -> String {
    format!(
        "{} {}",
        v["msg"].as_str().unwrap_or(""),
        v["details"].as_str().unwrap_or("")
    )
}

#[test]
fn every_plugin_rejects_every_bad_input_without_changing_anything() {
    if !can_run() {
        return;
    }
    for p in PLUGINS {
        let Topology { host, containers } = Topology::new(1);
        let ctr: &Netns = &containers[0];
        let data_dir = integration::temp_dir("cnit-bad");
        let before = (host.snapshot(), ctr.snapshot());
        for row in rows(p) {
            let mut inv = Invocation::new(plugin(p), row.command)
                .container_id("ctr-bad")
                .netns(ctr)
                .raw_stdin(&row.stdin);
            for (k, v) in &row.env {
                inv = inv.env(k, v);
            }
            for k in &row.unset {
                inv = inv.unset(k);
            }
            let out = inv.run(&host);
            let err = out.expect_err(row.code);
            let msg = message(&err);
            assert!(
                msg.contains(row.names),
                "{p}: {}: message {msg:?} does not name {:?}",
                row.what,
                row.names
            );
            assert!(
                out.stderr.is_empty() || !out.stderr.contains("panicked"),
                "{p}: {}: panic: {}",
                row.what,
                out.stderr
            );
        }
        assert_eq!(
            before,
            (host.snapshot(), ctr.snapshot()),
            "{p}: the system changed"
        );
        assert!(integration::dir_entries(data_dir.path()).is_empty());
    }
}

#[test]
fn every_plugin_answers_version_and_introduces_itself() {
    if !can_run() {
        return;
    }
    for p in PLUGINS {
        let v = Invocation::new(plugin(p), "VERSION")
            .raw_stdin(br#"{"cniVersion":"1.0.0"}"#)
            .run_in(None)
            .expect_ok();
        assert_eq!(
            v["supportedVersions"],
            json!([
                "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"
            ]),
            "{p}"
        );
        let out = std::process::Command::new(plugin(p))
            .env_clear()
            .output()
            .unwrap();
        assert!(out.status.success(), "{p}");
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            text.starts_with(&format!("CNI {p} plugin v")),
            "{p}: {text}"
        );
        assert!(text.contains("1.1.0"), "{p}: {text}");
    }
}
