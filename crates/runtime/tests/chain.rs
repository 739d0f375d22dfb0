//! The runtime library driving fake plugins: small scripts that log every
//! call (verb, environment, stdin) and answer as told. These tests need no
//! privileges and no network namespace; they check what the runtime sends
//! and in which order. Real plugins are driven in tests/tests/runtime.rs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use runtime::{
    Attachment, CheckOutcome, Error, GcAttachment, NetworkConfigList, PluginFailure, ResultCache,
    Runtime, StatusOutcome, config_dir,
};
use serde_json::{Value, json};

/// A directory of fake plugins plus the log they write.
struct Fakes {
    dir: tempfile::TempDir,
}

/// How one fake plugin behaves.
struct Fake<'a> {
    name: &'a str,
    versions: &'a [&'a str],
    /// Verb on which it fails, with this CNI error code.
    fail_on: Option<(&'a str, u32)>,
    /// Shell run before answering (e.g. `sleep 5`).
    before: &'a str,
}

impl<'a> Fake<'a> {
    fn new(name: &'a str) -> Self {
        Fake {
            name,
            versions: &["0.3.1", "0.4.0", "1.0.0", "1.1.0"],
            fail_on: None,
            before: "",
        }
    }
}

/// One logged plugin call.
#[derive(Debug)]
struct Call {
    plugin: String,
    verb: String,
    container_id: String,
    ifname: String,
    args: String,
    stdin: Value,
}

impl Fakes {
    fn new() -> Self {
        Fakes {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("calls.log")
    }

    fn install(&self, fake: Fake) {
        let versions: Vec<String> = fake.versions.iter().map(|v| format!("\"{v}\"")).collect();
        let (fail_verb, code) = fake.fail_on.unwrap_or(("NEVER", 0));
        let script = format!(
            r#"#!/bin/sh
if [ "$CNI_COMMAND" = VERSION ]; then
  echo '{{"cniVersion":"1.0.0","supportedVersions":[{versions}]}}'
  exit 0
fi
printf '%s %s %s %s %s ' {name} "$CNI_COMMAND" "${{CNI_CONTAINERID:--}}" "${{CNI_IFNAME:--}}" "${{CNI_ARGS:--}}" >> {log}
cat >> {log}
echo >> {log}
{before}
case "$CNI_COMMAND" in
  {fail_verb}) echo '{{"code":{code},"msg":"{name} says no","details":"on purpose"}}'; echo "{name} went wrong" >&2; exit 1;;
  ADD) echo '{{"cniVersion":"1.0.0","interfaces":[{{"name":"{name}"}}],"dns":{{}}}}';;
esac
exit 0
"#,
            versions = versions.join(","),
            name = fake.name,
            log = self.log().display(),
            before = fake.before,
        );
        test_support::write_executable(&self.bin(), fake.name, &script).unwrap();
    }

    fn runtime(&self) -> Runtime {
        Runtime::new(vec![self.dir.path().join("nothing-here"), self.bin()])
            .with_cache(ResultCache::new(self.cache_dir()))
            .with_timeout(Some(Duration::from_secs(10)))
    }

    fn calls(&self) -> Vec<Call> {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let calls = text
            .lines()
            .map(|line| {
                let mut parts = line.splitn(6, ' ');
                let mut next = || parts.next().unwrap().to_string();
                Call {
                    plugin: next(),
                    verb: next(),
                    container_id: next(),
                    ifname: next(),
                    args: next(),
                    stdin: serde_json::from_str(&next()).unwrap(),
                }
            })
            .collect();
        let _ = std::fs::remove_file(self.log());
        calls
    }
}

fn network(value: Value) -> NetworkConfigList {
    NetworkConfigList::from_bytes(value.to_string().as_bytes(), "test").unwrap()
}

fn two_plugin_network(version: &str) -> NetworkConfigList {
    network(json!({
        "cniVersion": version,
        "name": "testnet",
        "plugins": [
            {"type": "first", "capabilities": {"portMappings": true}, "keep": "me"},
            {"type": "second", "capabilities": {"ips": true, "mac": false}}
        ]
    }))
}

fn attachment() -> Attachment {
    let mut a = Attachment::new("ctr1", "/run/netns/ctr1", "eth0");
    a.args = vec![("IgnoreUnknown".into(), "1".into())];
    a.capability_args =
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
                               "ips": ["10.0.0.5/24"], "mac": "02:00:00:00:00:01"})
        .as_object()
        .unwrap()
        .clone();
    a
}

fn verbs(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .map(|c| format!("{} {}", c.plugin, c.verb))
        .collect()
}

#[test]
fn add_runs_the_chain_in_order_and_caches_the_final_result() {
    let fakes = Fakes::new();
    fakes.install(Fake::new("first"));
    fakes.install(Fake::new("second"));
    let rt = fakes.runtime();
    let net = two_plugin_network("1.0.0");

    let result = rt.add(&net, &attachment()).unwrap();
    assert_eq!(result["interfaces"][0]["name"], "second");

    let calls = fakes.calls();
    assert_eq!(verbs(&calls), ["first ADD", "second ADD"]);
    let first = &calls[0];
    assert_eq!(first.container_id, "ctr1");
    assert_eq!(first.ifname, "eth0");
    assert_eq!(first.args, "IgnoreUnknown=1");
    // name and version injected, unknown keys kept, capabilities never sent,
    // runtimeConfig limited to what the plugin declared, no prevResult first.
    assert_eq!(
        first.stdin,
        json!({"type": "first", "keep": "me", "name": "testnet", "cniVersion": "1.0.0",
               "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}})
    );
    let second = &calls[1];
    assert_eq!(
        second.stdin["runtimeConfig"],
        json!({"ips": ["10.0.0.5/24"]})
    );
    assert_eq!(second.stdin["prevResult"]["interfaces"][0]["name"], "first");
    assert!(second.stdin.get("capabilities").is_none());

    // libcni's cache file, with what the ADD was called with.
    let file = fakes.cache_dir().join("results/testnet-ctr1-eth0");
    let cached: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(cached["kind"], "cniCacheV1");
    assert_eq!(cached["networkName"], "testnet");
    assert_eq!(cached["netns"], "/run/netns/ctr1");
    assert_eq!(cached["cniArgs"], json!([["IgnoreUnknown", "1"]]));
    assert_eq!(cached["capabilityArgs"]["mac"], "02:00:00:00:00:01");
    assert_eq!(cached["result"], result);
}

#[test]
fn del_runs_in_reverse_with_the_cached_result_and_forgets_it() {
    let fakes = Fakes::new();
    fakes.install(Fake::new("first"));
    fakes.install(Fake::new("second"));
    let rt = fakes.runtime();
    let net = two_plugin_network("1.0.0");
    let added = rt.add(&net, &attachment()).unwrap();
    fakes.calls();

    // A DEL without the arguments still gets those of the ADD from the cache.
    let bare = Attachment::new("ctr1", "", "eth0");
    rt.del(&net, &bare).unwrap();
    let calls = fakes.calls();
    assert_eq!(verbs(&calls), ["second DEL", "first DEL"]);
    for call in &calls {
        assert_eq!(call.stdin["prevResult"], added);
        assert_eq!(call.args, "IgnoreUnknown=1");
    }
    assert_eq!(
        calls[1].stdin["runtimeConfig"]["portMappings"][0]["hostPort"],
        8080
    );
    assert!(
        rt.cache()
            .load("testnet", "ctr1", "eth0")
            .unwrap()
            .is_none()
    );

    // DEL again: no cache, no prevResult, still fine.
    rt.del(&net, &bare).unwrap();
    let calls = fakes.calls();
    assert_eq!(calls.len(), 2);
    assert!(calls[0].stdin.get("prevResult").is_none());
}

#[test]
fn del_keeps_going_after_a_failure_and_keeps_the_cache_for_a_retry() {
    let fakes = Fakes::new();
    fakes.install(Fake::new("first"));
    fakes.install(Fake::new("second"));
    fakes.install(Fake::new("third"));
    let rt = fakes.runtime();
    let net = network(json!({"cniVersion": "1.0.0", "name": "n3",
        "plugins": [{"type": "first"}, {"type": "second"}, {"type": "third"}]}));
    rt.add(&net, &attachment()).unwrap();
    fakes.install(Fake {
        fail_on: Some(("DEL", 11)),
        ..Fake::new("second")
    });
    fakes.calls();

    let err = rt.del(&net, &attachment()).unwrap_err();
    assert_eq!(
        verbs(&fakes.calls()),
        ["third DEL", "second DEL", "first DEL"]
    );
    let text = err.to_string();
    assert!(
        text.contains(
            r#"network "n3": plugin "second" failed (DEL): second says no: on purpose (code 11)"#
        ),
        "{text}"
    );
    assert!(text.contains("second went wrong"), "stderr kept: {text}");
    assert_eq!(err.cni_code(), Some(11));
    assert!(rt.cache().load("n3", "ctr1", "eth0").unwrap().is_some());
}

#[test]
fn add_stops_at_the_failing_plugin_and_del_cleans_up_the_rest() {
    let fakes = Fakes::new();
    fakes.install(Fake::new("first"));
    fakes.install(Fake {
        fail_on: Some(("ADD", 7)),
        ..Fake::new("second")
    });
    fakes.install(Fake::new("third"));
    let rt = fakes.runtime();
    let net = network(json!({"cniVersion": "1.0.0", "name": "mid",
        "plugins": [{"type": "first"}, {"type": "second"}, {"type": "third"}]}));

    let err = rt.add(&net, &attachment()).unwrap_err();
    assert_eq!(verbs(&fakes.calls()), ["first ADD", "second ADD"]);
    match &err {
        Error::Plugin(p) => {
            assert_eq!(p.plugin, "second");
            assert!(matches!(&p.failure, PluginFailure::Cni(e) if e.code == 7));
        }
        other => panic!("{other:?}"),
    }
    assert!(rt.cache().load("mid", "ctr1", "eth0").unwrap().is_none());

    rt.del(&net, &attachment()).unwrap();
    assert_eq!(
        verbs(&fakes.calls()),
        ["third DEL", "second DEL", "first DEL"]
    );
}

#[test]
fn check_uses_the_cache_and_honours_disable_check_and_the_version() {
    let fakes = Fakes::new();
    fakes.install(Fake::new("first"));
    fakes.install(Fake::new("second"));
    let rt = fakes.runtime();
    let net = two_plugin_network("1.0.0");

    let err = rt.check(&net, &attachment()).unwrap_err();
    assert!(matches!(err, Error::NotAdded { .. }), "{err}");

    let added = rt.add(&net, &attachment()).unwrap();
    fakes.calls();
    assert_eq!(
        rt.check(&net, &attachment()).unwrap(),
        CheckOutcome::Checked
    );
    let calls = fakes.calls();
    assert_eq!(verbs(&calls), ["first CHECK", "second CHECK"]);
    assert_eq!(calls[0].stdin["prevResult"], added);

    let mut disabled = net.clone();
    disabled.disable_check = true;
    assert_eq!(
        rt.check(&disabled, &attachment()).unwrap(),
        CheckOutcome::Disabled
    );
    assert!(fakes.calls().is_empty());

    let old = two_plugin_network("0.3.1");
    let err = rt.check(&old, &attachment()).unwrap_err();
    assert!(
        err.to_string()
            .contains("does not support the CHECK command"),
        "{err}"
    );
}

#[test]
fn gc_deletes_stale_cached_attachments_then_sends_gc_with_both_keys() {
    let fakes = Fakes::new();
    fakes.install(Fake::new("first"));
    fakes.install(Fake::new("second"));
    let rt = fakes.runtime();
    let net = two_plugin_network("1.1.0");
    let keep = Attachment::new("keep", "/run/netns/keep", "eth0");
    let stale = Attachment::new("stale", "/run/netns/stale", "eth0");
    rt.add(&net, &keep).unwrap();
    rt.add(&net, &stale).unwrap();
    // Another network's attachment is none of this GC's business.
    let other = two_plugin_network("1.1.0");
    let other = NetworkConfigList {
        name: "other".into(),
        ..other
    };
    rt.add(&other, &stale).unwrap();
    fakes.calls();

    let valid = [GcAttachment {
        container_id: "keep".into(),
        ifname: "eth0".into(),
    }];
    let report = rt.gc(&net, Some(&valid)).unwrap();
    assert_eq!(
        report.deleted,
        [GcAttachment {
            container_id: "stale".into(),
            ifname: "eth0".into()
        }]
    );
    assert!(report.plugins_called);
    let calls = fakes.calls();
    assert_eq!(
        verbs(&calls),
        ["second DEL", "first DEL", "first GC", "second GC"]
    );
    assert_eq!(calls[0].container_id, "stale");
    let gc = &calls[2];
    let expected = json!([{"containerID": "keep", "ifname": "eth0"}]);
    assert_eq!(gc.stdin["cni.dev/valid-attachments"], expected);
    assert_eq!(gc.stdin["cni.dev/attachments"], expected);
    assert_eq!(gc.stdin["name"], "testnet");
    assert_eq!(gc.container_id, "-", "GC carries no container id");
    assert!(gc.stdin.get("capabilities").is_none());
    assert!(gc.stdin.get("runtimeConfig").is_none());

    assert!(
        rt.cache()
            .load("testnet", "keep", "eth0")
            .unwrap()
            .is_some()
    );
    assert!(
        rt.cache()
            .load("testnet", "stale", "eth0")
            .unwrap()
            .is_none()
    );
    assert!(rt.cache().load("other", "stale", "eth0").unwrap().is_some());

    // disableGC: nothing at all.
    let mut disabled = net.clone();
    disabled.disable_gc = true;
    assert!(rt.gc(&disabled, None).unwrap().disabled);
    assert!(fakes.calls().is_empty());

    // No valid list (cnitool's GC): every cached attachment goes, no key sent.
    let report = rt.gc(&net, None).unwrap();
    assert_eq!(report.deleted.len(), 1);
    let calls = fakes.calls();
    assert!(calls[2].stdin.get("cni.dev/valid-attachments").is_none());
}

#[test]
fn gc_before_1_1_only_deletes_cached_attachments() {
    let fakes = Fakes::new();
    fakes.install(Fake::new("first"));
    fakes.install(Fake::new("second"));
    let rt = fakes.runtime();
    let net = two_plugin_network("1.0.0");
    rt.add(&net, &attachment()).unwrap();
    fakes.calls();
    let report = rt.gc(&net, Some(&[])).unwrap();
    assert!(!report.plugins_called);
    assert_eq!(verbs(&fakes.calls()), ["second DEL", "first DEL"]);
}

#[test]
fn status_asks_each_plugin_and_stops_at_the_first_not_ready() {
    let fakes = Fakes::new();
    fakes.install(Fake::new("first"));
    fakes.install(Fake {
        fail_on: Some(("STATUS", 50)),
        ..Fake::new("second")
    });
    fakes.install(Fake::new("third"));
    let rt = fakes.runtime();
    let net = network(json!({"cniVersion": "1.1.0", "name": "st",
        "plugins": [{"type": "first"}, {"type": "second"}, {"type": "third"}]}));
    let err = rt.status(&net).unwrap_err();
    assert_eq!(err.cni_code(), Some(50));
    assert_eq!(verbs(&fakes.calls()), ["first STATUS", "second STATUS"]);

    let old = NetworkConfigList {
        cni_version: "1.0.0".into(),
        ..net
    };
    assert_eq!(
        rt.status(&old).unwrap(),
        StatusOutcome::NotSupported {
            cni_version: "1.0.0".into()
        }
    );
    assert!(fakes.calls().is_empty());
}

#[test]
fn cni_versions_pick_the_newest_version_every_plugin_supports() {
    let fakes = Fakes::new();
    fakes.install(Fake::new("first"));
    fakes.install(Fake {
        versions: &["0.4.0", "1.0.0"],
        ..Fake::new("second")
    });
    let rt = fakes.runtime();
    let net = network(
        json!({"cniVersion": "0.4.0", "cniVersions": ["1.0.0", "1.1.0", "2.0.0"],
        "name": "neg", "plugins": [{"type": "first"}, {"type": "second"}]}),
    );
    assert_eq!(rt.negotiate_version(&net).unwrap(), "1.0.0");
    rt.add(&net, &attachment()).unwrap();
    let calls = fakes.calls();
    assert!(calls.iter().all(|c| c.stdin["cniVersion"] == "1.0.0"));

    let impossible = network(json!({"cniVersions": ["1.1.0"], "name": "neg2",
        "plugins": [{"type": "first"}, {"type": "second"}]}));
    let err = rt.negotiate_version(&impossible).unwrap_err().to_string();
    assert!(
        err.contains("no version of [\"1.1.0\"] is supported by every plugin"),
        "{err}"
    );
    assert!(err.contains("second supports"), "{err}");
}

#[test]
fn del_still_runs_the_other_plugins_when_one_has_vanished() {
    let fakes = Fakes::new();
    fakes.install(Fake::new("first"));
    fakes.install(Fake::new("second"));
    let rt = fakes.runtime();
    let net = network(json!({"cniVersions": ["1.0.0", "1.1.0"], "name": "gone",
        "plugins": [{"type": "first"}, {"type": "second"}]}));
    rt.add(&net, &attachment()).unwrap();
    fakes.calls();
    std::fs::remove_file(fakes.bin().join("second")).unwrap();

    // A fresh runtime has no remembered VERSION answers.
    let rt = fakes.runtime();
    let err = rt.del(&net, &attachment()).unwrap_err().to_string();
    assert!(
        err.contains(r#"plugin "second" failed (DEL): not found"#),
        "{err}"
    );
    let calls = fakes.calls();
    assert_eq!(verbs(&calls), ["first DEL"]);
    // The version the ADD ran with (the fakes answer ADD with 1.0.0).
    assert_eq!(calls[0].stdin["cniVersion"], "1.0.0");
    assert!(rt.cache().load("gone", "ctr1", "eth0").unwrap().is_some());
}

#[test]
fn a_hanging_plugin_is_killed_at_the_timeout() {
    let fakes = Fakes::new();
    fakes.install(Fake {
        before: "sleep 30",
        ..Fake::new("first")
    });
    let rt = fakes
        .runtime()
        .with_timeout(Some(Duration::from_millis(500)));
    let net =
        network(json!({"cniVersion": "1.0.0", "name": "slow", "plugins": [{"type": "first"}]}));
    let start = Instant::now();
    let err = rt.add(&net, &attachment()).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(10));
    let text = err.to_string();
    assert!(
        text.contains(r#"network "slow": plugin "first" failed (ADD): timed out after 0.5 s"#),
        "{text}"
    );
}

#[test]
fn missing_plugins_and_bad_arguments_fail_before_anything_runs() {
    let fakes = Fakes::new();
    fakes.install(Fake::new("first"));
    let rt = fakes.runtime();
    let net = network(json!({"cniVersion": "1.0.0", "name": "m",
        "plugins": [{"type": "first"}, {"type": "absent"}]}));
    let err = rt.add(&net, &attachment()).unwrap_err().to_string();
    assert!(
        err.contains(r#"plugin "absent" failed (ADD): not found in ["#),
        "{err}"
    );

    let mut bad = attachment();
    bad.ifname = "much-too-long-name".into();
    assert!(rt.add(&net, &bad).is_err());
    let mut bad = attachment();
    bad.container_id = "bad/id".into();
    assert!(rt.add(&net, &bad).is_err());
    let calls = fakes.calls();
    assert_eq!(verbs(&calls), ["first ADD"]);
}

#[test]
fn a_cache_written_by_cnitool_is_used_for_del() {
    // As libcni 1.1.2 writes it for `cnitool add`: base64 config, no
    // capabilityArgs key when CAP_ARGS was empty.
    let fakes = Fakes::new();
    fakes.install(Fake::new("first"));
    let rt = fakes.runtime();
    let net = network(json!({"cniVersion": "1.0.0", "name": "go", "plugins": [{"type": "first"}]}));
    let results = fakes.cache_dir().join("results");
    std::fs::create_dir_all(&results).unwrap();
    let id = runtime::attachment::cnitool_container_id(Path::new("/run/netns/x")).unwrap();
    std::fs::write(
        results.join(format!("go-{id}-eth0")),
        format!(
            r#"{{"kind":"cniCacheV1","containerId":"{id}","config":"eyJuYW1lIjoiZ28ifQ==","ifName":"eth0","networkName":"go","netns":"/run/netns/x","result":{{"cniVersion":"1.0.0","interfaces":[{{"name":"from-go"}}]}}}}"#
        ),
    )
    .unwrap();
    rt.del(&net, &Attachment::new(&id, "/run/netns/x", "eth0"))
        .unwrap();
    let calls = fakes.calls();
    assert_eq!(
        calls[0].stdin["prevResult"]["interfaces"][0]["name"],
        "from-go"
    );
    assert!(std::fs::read_dir(&results).unwrap().next().is_none());
}

#[test]
fn malformed_files_are_named_and_do_not_hide_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("00-broken.conflist", r#"{"name": "x", "plugins": [ "#);
    write(
        "05-notype.conflist",
        r#"{"name": "y", "plugins": [{"bridge": "b"}]}"#,
    );
    write(
        "10-good.conflist",
        r#"{"name": "good", "cniVersion": "1.0.0", "plugins": [{"type": "a"}]}"#,
    );
    write("20-noname.conf", r#"{"type": "a"}"#);
    write(
        "30-badversion.conflist",
        r#"{"name": "v", "cniVersion": "one", "plugins": [{"type": "a"}]}"#,
    );

    assert_eq!(config_dir::find(dir.path(), "good").unwrap().name, "good");
    let err = config_dir::find(dir.path(), "missing")
        .unwrap_err()
        .to_string();
    for expected in [
        "00-broken.conflist: invalid JSON",
        "05-notype.conflist: plugin 0: missing 'type'",
        "30-badversion.conflist: invalid cniVersion \"one\"",
    ] {
        assert!(err.contains(expected), "{expected:?} not in {err}");
    }
}
