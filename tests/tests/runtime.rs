//! The runtime, end to end: `cnictl` runs the bundled network
//! configurations with real plugin chains (the Go reference plugins and the
//! project's own), inside a throwaway "host" namespace, and hands
//! attachments back and forth with libcni's `cnitool`.
//!
//! Nothing here touches the machine's /var/lib/cni: `cnictl` gets a
//! temporary `--cache-dir`, host-local a temporary `dataDir`, and `cnitool`
//! (whose cache directory is fixed) runs in a private mount namespace where
//! a temporary directory is mounted over /var/lib.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use integration::{
    Netns, REFERENCE_DIR, bin_dir, can_run, clean_env, dir_entries, plugin, temp_dir,
    write_executable,
};
use integration::{cnitool, with_private_var_lib};
use serde_json::{Value, json};

/// Which implementation of the plugins a test drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plugins {
    Reference,
    Project,
}

impl Plugins {
    fn dir(self) -> PathBuf {
        match self {
            Plugins::Reference => PathBuf::from(REFERENCE_DIR),
            Plugins::Project => bin_dir(),
        }
    }

    /// Whether every plugin the bundled configurations use is there and
    /// speaks the protocol (answers VERSION); prints why not otherwise.
    fn ready(self, names: &[&str]) -> bool {
        for name in names {
            let path = self.dir().join(name);
            let answer = Command::new(&path)
                .env_clear()
                .env("CNI_COMMAND", "VERSION")
                .output();
            let speaks = answer.as_ref().is_ok_and(|out| {
                serde_json::from_slice::<Value>(&out.stdout)
                    .is_ok_and(|v| v["supportedVersions"].is_array())
            });
            if !speaks {
                eprintln!(
                    "SKIPPED: {self:?} plugin {} is missing or does not answer VERSION yet",
                    path.display()
                );
                return false;
            }
        }
        true
    }
}

/// One test's world: a host namespace, a container namespace, and a
/// temporary directory holding configurations, caches and IPAM state.
struct World {
    host: Netns,
    ctr: Netns,
    tmp: tempfile::TempDir,
    cni_path: String,
}

impl World {
    fn new(plugins: Plugins) -> Self {
        let tmp = temp_dir("cnit-runtime");
        for sub in ["conf", "var-lib/cni", "ipam", "fakes"] {
            std::fs::create_dir_all(tmp.path().join(sub)).unwrap();
        }
        let cni_path = format!(
            "{}:{}",
            tmp.path().join("fakes").display(),
            plugins.dir().display()
        );
        World {
            host: Netns::new("cnit-rt-host"),
            ctr: Netns::bare("cnit-rt-ctr"),
            tmp,
            cni_path,
        }
    }

    fn conf_dir(&self) -> PathBuf {
        self.tmp.path().join("conf")
    }

    /// Mounted over /var/lib for cnitool, so its /var/lib/cni is this
    /// directory's `cni`, which is also cnictl's `--cache-dir`.
    fn var_lib(&self) -> PathBuf {
        self.tmp.path().join("var-lib")
    }

    fn cache_dir(&self) -> PathBuf {
        self.var_lib().join("cni")
    }

    fn ipam_dir(&self) -> PathBuf {
        self.tmp.path().join("ipam")
    }

    /// A bundled configuration from conf/, with host-local's state moved
    /// into the temporary directory; `edit` may change it further.
    fn install_bundled(&self, file: &str, edit: impl FnOnce(&mut Value)) -> Value {
        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../conf")
            .join(file);
        let mut conf: Value = serde_json::from_slice(&std::fs::read(&source).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", source.display()));
        for plugin in conf["plugins"].as_array_mut().unwrap() {
            if let Some(ipam) = plugin.get_mut("ipam").and_then(Value::as_object_mut) {
                ipam.insert("dataDir".into(), json!(self.ipam_dir()));
            }
        }
        edit(&mut conf);
        std::fs::write(self.conf_dir().join(file), conf.to_string()).unwrap();
        conf
    }

    /// A fake plugin script in the first CNI_PATH directory.
    fn install_fake(&self, name: &str, on_add: &str) {
        let script = format!(
            r#"#!/bin/sh
if [ "$CNI_COMMAND" = VERSION ]; then
  echo '{{"cniVersion":"1.0.0","supportedVersions":["0.3.1","0.4.0","1.0.0","1.1.0"]}}'
  exit 0
fi
cat > /dev/null
if [ "$CNI_COMMAND" = ADD ]; then
{on_add}
fi
exit 0
"#
        );
        write_executable(&self.tmp.path().join("fakes"), name, &script).unwrap();
    }

    fn base_command(&self, program: &Path) -> Command {
        let mut cmd = self.host.command(program);
        clean_env(&mut cmd);
        cmd
    }

    /// `cnictl ARGS` inside the host namespace, configured through the same
    /// environment variables cnitool reads, plus its cache directory.
    fn cnictl(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.base_command(&plugin("cnictl"));
        cmd.env("NETCONFPATH", self.conf_dir())
            .env("CNI_PATH", &self.cni_path)
            .env("CNI_CACHE_DIR", self.cache_dir())
            .envs(env.iter().copied())
            .args(args);
        cmd.output().expect("run cnictl")
    }

    fn cnictl_ok(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = self.cnictl(args, env);
        assert!(
            out.status.success(),
            "cnictl {args:?} failed: {}",
            describe(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `cnitool ARGS` inside the host namespace and in a private mount
    /// namespace whose /var/lib is [`World::var_lib`].
    fn cnitool(&self, tool: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.base_command(tool);
        cmd.env("NETCONFPATH", self.conf_dir())
            .env("CNI_PATH", &self.cni_path)
            .envs(env.iter().copied())
            .args(args);
        with_private_var_lib(&mut cmd, &self.var_lib());
        cmd.output().expect("run cnitool")
    }

    fn cnitool_ok(&self, tool: &Path, args: &[&str], env: &[(&str, &str)]) {
        let out = self.cnitool(tool, args, env);
        assert!(
            out.status.success(),
            "cnitool {args:?} failed: {}",
            describe(&out)
        );
    }

    fn ctr(&self) -> String {
        self.ctr.path_str()
    }

    /// host-local reservations (not its lock or last_reserved_ip files).
    fn reservations(&self, network: &str) -> Vec<String> {
        integration::reservations(&self.ipam_dir().join(network))
    }

    fn cached(&self) -> Vec<String> {
        dir_entries(&self.cache_dir().join("results"))
    }

    fn host_veths(&self) -> Vec<String> {
        self.host
            .links()
            .into_iter()
            .filter(|l| l.starts_with("veth"))
            .collect()
    }

    /// The container is detached: no interface but lo, no veth on the
    /// host, no address reserved, no cache entry, no portmap chain.
    fn assert_detached(&self) {
        assert_eq!(self.ctr.links(), ["lo"], "container interfaces left");
        assert!(
            self.host_veths().is_empty(),
            "host veths left: {:?}",
            self.host_veths()
        );
        assert!(
            self.reservations("cni-rs").is_empty(),
            "addresses still reserved: {:?}",
            self.reservations("cni-rs")
        );
        assert!(
            self.cached().is_empty(),
            "cache entries left: {:?}",
            self.cached()
        );
        let rules = self.host.netfilter();
        assert!(!rules.contains("CNI-DN-"), "portmap chain left:\n{rules}");
    }

    /// Detached, and no netfilter rule names the container or its address.
    fn assert_nothing_left(&self, container_id: &str) {
        self.assert_detached();
        let rules = self.host.netfilter();
        assert!(
            !rules.contains(container_id),
            "rules for {container_id} left:\n{rules}"
        );
        assert!(
            !rules.contains("10.89.0.2"),
            "rules for the container address left:\n{rules}"
        );
    }
}

/// The reference portmap (1.1.1, Debian 12) fails every CHECK of an
/// IPv4-only container: it looks for its IPv6 DNAT chain, which it never
/// created. Recognise exactly that failure, so the tests still check
/// everything else with the reference plugins.
fn reference_portmap_check_bug(plugins: Plugins, out: &Output) -> bool {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let known = plugins == Plugins::Reference
        && !out.status.success()
        && stderr.contains("could not check ipv6 dnat: chain CNI-DN-");
    if known {
        eprintln!(
            "note: reference portmap CHECK bug (IPv6 chain of an IPv4-only container): {stderr}"
        );
    }
    known
}

/// IPv4 addresses of a link (IPv6 link-local ones come and go by themselves).
fn v4(ns: &Netns, link: &str) -> Vec<String> {
    ns.addresses(link)
        .into_iter()
        .filter(|a| !a.contains(':'))
        .collect()
}

fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// cnitool's container id for a netns path (`cnitool-` + 20 hex digits).
fn cnitool_id(world: &World) -> String {
    let out = world.cnictl_ok(&["add", "cni-loopback", &world.ctr(), "--json"], &[]);
    let _: Value = serde_json::from_str(&out).unwrap();
    let cached = world.cached();
    world.cnictl_ok(&["del", "cni-loopback", &world.ctr()], &[]);
    let name = cached
        .iter()
        .find(|f| f.starts_with("cni-loopback-"))
        .expect("loopback cache entry");
    name["cni-loopback-".len()..name.len() - "-eth0".len()].to_string()
}

const PORTS: &str = r#"{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}"#;

/// add, check, status, gc and del of the bundled bridge network.
fn every_verb_on_the_bundled_network(plugins: Plugins) {
    let world = World::new(plugins);
    world.install_bundled("10-cni-rs.conflist", |_| {});
    world.install_bundled("99-loopback.conflist", |_| {});
    let ctr = world.ctr();

    let listed = world.cnictl_ok(&["list"], &[]);
    assert!(
        listed.contains("cni-rs") && listed.contains("bridge,portmap"),
        "{listed}"
    );
    assert!(listed.contains("cni-loopback"), "{listed}");

    // The loopback network first, as a runtime would.
    world.cnictl_ok(&["add", "cni-loopback", &ctr], &[]);
    let lo = world.ctr.ip_json(&["link", "show", "lo"]);
    assert!(lo[0]["flags"].as_array().unwrap().iter().any(|f| f == "UP"));

    let summary = world.cnictl_ok(&["add", "cni-rs", &ctr], &[("CAP_ARGS", PORTS)]);
    for expected in [
        "interfaces:",
        "cni-rs0",
        "10.89.0.2/24 gateway 10.89.0.1 on eth0",
        "routes:",
        "0.0.0.0/0",
        "port mappings:",
        "tcp 8080 -> 80",
    ] {
        assert!(
            summary.contains(expected),
            "{expected:?} missing from:\n{summary}"
        );
    }
    assert_eq!(v4(&world.ctr, "eth0"), ["10.89.0.2/24"]);
    assert_eq!(v4(&world.host, "cni-rs0"), ["10.89.0.1/24"]);
    let routes = world.ctr.run_ok("ip", &["route", "show", "default"]);
    assert!(routes.contains("via 10.89.0.1 dev eth0"), "{routes}");
    assert_eq!(world.reservations("cni-rs"), ["10.89.0.2"]);
    let rules = world.host.netfilter();
    assert!(
        rules.contains("CNI-DN-") && rules.contains("8080"),
        "{rules}"
    );
    assert!(
        world.ctr.ping("10.89.0.1"),
        "container cannot reach its gateway"
    );

    let id = world
        .cached()
        .iter()
        .find_map(|f| {
            f.strip_prefix("cni-rs-")
                .map(|s| s.trim_end_matches("-eth0").to_string())
        })
        .expect("cache entry for cni-rs");
    assert!(id.starts_with("cnitool-") && id.len() == 28, "{id}");
    let cache: Value = serde_json::from_slice(
        &std::fs::read(world.cache_dir().join(format!("results/cni-rs-{id}-eth0"))).unwrap(),
    )
    .unwrap();
    assert_eq!(cache["kind"], "cniCacheV1");
    assert_eq!(
        cache["capabilityArgs"],
        serde_json::from_str::<Value>(PORTS).unwrap()
    );
    assert_eq!(cache["result"]["ips"][0]["address"], "10.89.0.2/24");

    let checked = world.cnictl(&["check", "cni-rs", &ctr], &[]);
    if !reference_portmap_check_bug(plugins, &checked) {
        assert!(checked.status.success(), "{}", describe(&checked));
        assert!(String::from_utf8_lossy(&checked.stdout).contains("CHECK passed"));
    }

    // A second ADD of the same attachment is refused before any plugin runs
    // (its cleanup DEL would otherwise tear down the first).
    let again = world.cnictl(&["add", "cni-rs", &ctr], &[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already added"));
    assert_eq!(v4(&world.ctr, "eth0"), ["10.89.0.2/24"]);

    let status = world.cnictl_ok(&["status", "cni-rs"], &[]);
    match plugins {
        // Reference plugins 1.1.1 speak up to 1.0.0: no STATUS.
        Plugins::Reference => assert!(status.contains("predates STATUS"), "{status}"),
        Plugins::Project => assert!(status.contains("ready"), "{status}"),
    }

    // GC keeping every cached attachment removes nothing.
    world.cnictl_ok(&["gc", "cni-rs", "--keep-cached"], &[]);
    assert_eq!(v4(&world.ctr, "eth0"), ["10.89.0.2/24"]);
    assert_eq!(world.reservations("cni-rs"), ["10.89.0.2"]);

    // DEL without CAP_ARGS: the cached port mappings are replayed to portmap.
    let deleted = world.cnictl_ok(&["del", "cni-rs", &ctr], &[]);
    assert!(deleted.contains("deleted"), "{deleted}");
    world.cnictl_ok(&["del", "cni-loopback", &ctr], &[]);
    world.assert_nothing_left(&id);

    // DEL is idempotent.
    world.cnictl_ok(&["del", "cni-rs", &ctr], &[]);
}

#[test]
fn every_verb_with_the_reference_plugins() {
    if !can_run() || !Plugins::Reference.ready(&["bridge", "host-local", "portmap", "loopback"]) {
        return;
    }
    every_verb_on_the_bundled_network(Plugins::Reference);
}

#[test]
fn every_verb_with_the_project_plugins() {
    if !can_run() || !Plugins::Project.ready(&["bridge", "host-local", "portmap", "loopback"]) {
        return;
    }
    every_verb_on_the_bundled_network(Plugins::Project);
}

#[test]
fn loopback_network_with_the_project_plugin() {
    if !can_run() || !Plugins::Project.ready(&["loopback"]) {
        return;
    }
    let world = World::new(Plugins::Project);
    world.install_bundled("99-loopback.conflist", |_| {});
    let ctr = world.ctr();
    let out = world.cnictl_ok(&["add", "cni-loopback", &ctr, "--json"], &[]);
    let result: Value = serde_json::from_str(&out).unwrap();
    // cniVersions ["1.0.0", "1.1.0"]: our plugin speaks 1.1.0, so that wins.
    assert_eq!(result["cniVersion"], "1.1.0");
    assert_eq!(result["ips"][0]["address"], "127.0.0.1/8");
    assert!(world.ctr.ping("127.0.0.1"));
    world.cnictl_ok(&["check", "cni-loopback", &ctr], &[]);
    let status = world.cnictl_ok(&["status", "cni-loopback"], &[]);
    assert!(status.contains("ready"), "{status}");
    world.cnictl_ok(&["del", "cni-loopback", &ctr], &[]);
    assert!(!world.ctr.ping("127.0.0.1"));
    assert!(world.cached().is_empty());
}

#[test]
fn gc_deletes_attachments_that_are_not_valid() {
    if !can_run() || !Plugins::Reference.ready(&["bridge", "host-local", "portmap"]) {
        return;
    }
    let world = World::new(Plugins::Reference);
    world.install_bundled("10-cni-rs.conflist", |_| {});
    world.cnictl_ok(&["add", "cni-rs", &world.ctr()], &[("CAP_ARGS", PORTS)]);
    assert_eq!(world.reservations("cni-rs"), ["10.89.0.2"]);
    let out = world.cnictl_ok(
        &["gc", "cni-rs", "--valid", "some-other-container/eth0"],
        &[],
    );
    assert!(out.contains("deleted stale attachment cnitool-"), "{out}");
    world.assert_nothing_left("cnitool-");
}

#[test]
fn a_plugin_failing_mid_chain_leaves_nothing_behind() {
    if !can_run() || !Plugins::Reference.ready(&["bridge", "host-local", "portmap"]) {
        return;
    }
    let world = World::new(Plugins::Reference);
    world.install_fake(
        "refuse",
        r#"echo '{"code":11,"msg":"not today","details":"fake failure"}'; echo 'refuse: stderr note' >&2; exit 1"#,
    );
    world.install_bundled("10-cni-rs.conflist", |conf| {
        let plugins = conf["plugins"].as_array_mut().unwrap();
        plugins.insert(1, json!({"type": "refuse"}));
    });
    let ctr = world.ctr();

    // cnictl runs DEL itself after the failed ADD.
    let out = world.cnictl(&["add", "cni-rs", &ctr], &[("CAP_ARGS", PORTS)]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            r#"network "cni-rs": plugin "refuse" failed (ADD): not today: fake failure (code 11)"#
        ),
        "{stderr}"
    );
    assert!(stderr.contains("refuse: stderr note"), "{stderr}");
    assert!(stderr.contains("the chain was deleted again"), "{stderr}");
    world.assert_nothing_left("cnitool-");

    // With --no-cleanup the bridge's work stays until an explicit DEL.
    let out = world.cnictl(&["add", "cni-rs", &ctr, "--no-cleanup"], &[]);
    assert!(!out.status.success());
    assert!(world.ctr.has_link("eth0"));
    assert_eq!(world.reservations("cni-rs").len(), 1);
    world.cnictl_ok(&["del", "cni-rs", &ctr], &[]);
    world.assert_nothing_left("cnitool-");
}

#[test]
fn a_hanging_plugin_times_out() {
    if !can_run() || !Plugins::Reference.ready(&["loopback"]) {
        return;
    }
    let world = World::new(Plugins::Reference);
    world.install_fake("hang", "sleep 60");
    std::fs::write(
        world.conf_dir().join("50-hang.conflist"),
        r#"{"cniVersion":"1.0.0","name":"hang","plugins":[{"type":"loopback"},{"type":"hang"}]}"#,
    )
    .unwrap();
    let start = std::time::Instant::now();
    let out = world.cnictl(&["--timeout", "0.5", "add", "hang", &world.ctr()], &[]);
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(r#"plugin "hang" failed (ADD): timed out after 0.5 s and was killed"#),
        "{stderr}"
    );
    // The cleanup DEL took lo down again.
    let lo = world.ctr.ip_json(&["link", "show", "lo"]);
    assert!(!lo[0]["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
}

#[test]
fn malformed_configuration_files_are_named() {
    if !can_run() {
        return;
    }
    let world = World::new(Plugins::Reference);
    let write = |name: &str, text: &str| std::fs::write(world.conf_dir().join(name), text).unwrap();
    write("10-truncated.conflist", r#"{"name": "a", "plugins": ["#);
    write(
        "20-notype.conflist",
        r#"{"name": "b", "plugins": [{"bridge": "x"}]}"#,
    );
    write("30-empty.conflist", r#"{"name": "c", "plugins": []}"#);
    write(
        "40-good.conf",
        r#"{"cniVersion": "1.0.0", "name": "good", "type": "loopback"}"#,
    );

    let listed = world.cnictl_ok(&["list"], &[]);
    assert!(
        listed.contains("10-truncated.conflist: invalid JSON"),
        "{listed}"
    );
    assert!(
        listed.contains("20-notype.conflist: plugin 0: missing 'type'"),
        "{listed}"
    );
    assert!(
        listed.contains("30-empty.conflist: no plugins in list"),
        "{listed}"
    );
    assert!(listed.contains("good"), "{listed}");

    let out = world.cnictl(&["add", "nope", &world.ctr()], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(r#"no network configuration named "nope""#),
        "{stderr}"
    );
    assert!(stderr.contains("10-truncated.conflist"), "{stderr}");

    // No plugin ran, so there is nothing to clean up.
    let out = world.cnictl(
        &["--cni-path", "/nonexistent", "add", "good", &world.ctr()],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            r#"network "good": plugin "loopback" failed (ADD): not found in [/nonexistent]"#
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("cleanup"), "{stderr}");

    // A broken file does not hide a good one after it.
    world.cnictl_ok(&["add", "good", &world.ctr()], &[]);
    world.cnictl_ok(&["del", "good", &world.ctr()], &[]);

    let out = world.cnictl(&["add", "good", &world.ctr()], &[("CAP_ARGS", "{not json")]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("CAP_ARGS is not valid JSON"));
    let out = world.cnictl(&["add", "good", &world.ctr()], &[("CNI_ARGS", "A=1;B")]);
    assert!(String::from_utf8_lossy(&out.stderr).contains(r#"invalid CNI_ARGS pair "B""#));
}

#[test]
fn cnictl_derives_the_container_id_as_cnitool_does() {
    if !can_run() || !Plugins::Reference.ready(&["loopback"]) {
        return;
    }
    let Some(tool) = cnitool() else { return };
    let world = World::new(Plugins::Reference);
    world.install_bundled("99-loopback.conflist", |_| {});
    let ours = cnitool_id(&world);
    world.cnitool_ok(&tool, &["add", "cni-loopback", &world.ctr()], &[]);
    assert_eq!(world.cached(), [format!("cni-loopback-{ours}-eth0")]);
    world.cnitool_ok(&tool, &["del", "cni-loopback", &world.ctr()], &[]);
}

/// ADD with one tool, DEL with the other: nothing may be left.
fn interop(plugins: Plugins, add_with_cnictl: bool) {
    let Some(tool) = cnitool() else { return };
    let world = World::new(plugins);
    // cnitool 1.1.2 (Debian 12) knows results up to 1.0.0 and ignores
    // cniVersions; a 1.1.0 result cached by cnictl would make its CHECK fail
    // ("unsupported CNI result version"). A node shared with such an old
    // libcni pins the version, as here.
    world.install_bundled("10-cni-rs.conflist", |conf| {
        conf.as_object_mut().unwrap().remove("cniVersions");
    });
    let ctr = world.ctr();
    let ports = [("CAP_ARGS", PORTS)];

    if add_with_cnictl {
        world.cnictl_ok(&["add", "cni-rs", &ctr], &ports);
    } else {
        world.cnitool_ok(&tool, &["add", "cni-rs", &ctr], &ports);
    }
    assert_eq!(v4(&world.ctr, "eth0"), ["10.89.0.2/24"]);
    let cached = world.cached();
    assert_eq!(cached.len(), 1, "{cached:?}");
    let id = cached[0]
        .trim_start_matches("cni-rs-")
        .trim_end_matches("-eth0")
        .to_string();
    assert!(world.host.netfilter().contains("CNI-DN-"));

    if add_with_cnictl {
        // cnitool does not replay cached capability arguments: pass them.
        let checked = world.cnitool(&tool, &["check", "cni-rs", &ctr], &ports);
        if !reference_portmap_check_bug(plugins, &checked) {
            assert!(checked.status.success(), "{}", describe(&checked));
        }
        world.cnitool_ok(&tool, &["del", "cni-rs", &ctr], &ports);
    } else {
        // cnictl replays the ones cnitool cached.
        let checked = world.cnictl(&["check", "cni-rs", &ctr], &[]);
        if !reference_portmap_check_bug(plugins, &checked) {
            assert!(checked.status.success(), "{}", describe(&checked));
        }
        world.cnictl_ok(&["del", "cni-rs", &ctr], &[]);
    }
    world.assert_nothing_left(&id);
}

#[test]
fn add_with_cnictl_del_with_cnitool_reference_plugins() {
    if can_run() && Plugins::Reference.ready(&["bridge", "host-local", "portmap"]) {
        interop(Plugins::Reference, true);
    }
}

#[test]
fn add_with_cnitool_del_with_cnictl_reference_plugins() {
    if can_run() && Plugins::Reference.ready(&["bridge", "host-local", "portmap"]) {
        interop(Plugins::Reference, false);
    }
}

#[test]
fn add_with_cnictl_del_with_cnitool_project_plugins() {
    if can_run() && Plugins::Project.ready(&["bridge", "host-local", "portmap"]) {
        interop(Plugins::Project, true);
    }
}

#[test]
fn add_with_cnitool_del_with_cnictl_project_plugins() {
    if can_run() && Plugins::Project.ready(&["bridge", "host-local", "portmap"]) {
        interop(Plugins::Project, false);
    }
}

/// A runtime often deletes after the container is gone: DEL must work with
/// an explicit container id, no netns argument and a namespace that no
/// longer exists, and still release everything on the host.
fn del_after_the_namespace_is_gone(plugins: Plugins) {
    let world = World::new(plugins);
    world.install_bundled("10-cni-rs.conflist", |_| {});
    let id = "ctr-gone-1";
    world.cnictl_ok(
        &["add", "cni-rs", &world.ctr(), "--container-id", id],
        &[("CAP_ARGS", PORTS)],
    );
    assert_eq!(world.reservations("cni-rs"), ["10.89.0.2"]);
    assert_eq!(world.cached(), [format!("cni-rs-{id}-eth0")]);

    let World {
        host,
        ctr,
        tmp,
        cni_path,
    } = world;
    drop(ctr);
    let world = World {
        host,
        ctr: Netns::bare("cnit-rt-ctr"),
        tmp,
        cni_path,
    };
    world.cnictl_ok(&["del", "cni-rs", "--container-id", id], &[]);
    if plugins == Plugins::Project {
        world.assert_nothing_left(id);
        return;
    }
    // The reference bridge skips its masquerade teardown when the netns is
    // gone (containernetworking/plugins#810): everything else is released,
    // and the only rules left are that chain and its jump.
    world.assert_detached();
    let rules = world.host.run_ok("iptables-save", &["-t", "nat"]);
    let leaked: Vec<&str> = rules.lines().filter(|l| l.contains(id)).collect();
    assert!(
        !leaked.is_empty(),
        "the reference leak is gone: update this test"
    );
    assert!(
        leaked
            .iter()
            .all(|l| l.contains("MASQUERADE") || l.contains("ACCEPT") || l.contains("-j CNI-")),
        "{leaked:?}"
    );
    eprintln!("note: reference bridge leaked its masquerade rules (plugins#810), as expected");
}

#[test]
fn del_after_the_namespace_is_gone_reference_plugins() {
    if can_run() && Plugins::Reference.ready(&["bridge", "host-local", "portmap"]) {
        del_after_the_namespace_is_gone(Plugins::Reference);
    }
}

#[test]
fn del_after_the_namespace_is_gone_project_plugins() {
    if can_run() && Plugins::Project.ready(&["bridge", "host-local", "portmap"]) {
        del_after_the_namespace_is_gone(Plugins::Project);
    }
}

/// The bridge + static + sbr example across runtimes: cnitool adds (its
/// result cached where cnictl finds it), cnictl deletes, nothing is left.
#[test]
fn sbr_example_add_with_cnitool_del_with_cnictl() {
    let Some(tool) = cnitool() else {
        return;
    };
    if !(can_run() && Plugins::Project.ready(&["bridge", "static", "sbr"])) {
        return;
    }
    let world = World::new(Plugins::Project);
    let example = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/runtimes/examples/40-cni-rs-sbr.conflist");
    std::fs::copy(&example, world.conf_dir().join("40-cni-rs-sbr.conflist")).unwrap();
    world.cnitool_ok(
        &tool,
        &["add", "cni-rs-second", &world.ctr()],
        &[("CNI_IFNAME", "eth1")],
    );
    let rules = world.ctr.run_ok("ip", &["rule"]);
    assert!(rules.contains("from 10.89.4.5 lookup 100"), "{rules}");
    world.cnictl_ok(&["del", "cni-rs-second", &world.ctr(), "-i", "eth1"], &[]);
    let rules = world.ctr.run_ok("ip", &["rule"]);
    assert!(!rules.contains("10.89.4.5"), "{rules}");
    assert!(!world.ctr.has_link("eth1"));
    assert!(world.cached().is_empty(), "{:?}", world.cached());
}
