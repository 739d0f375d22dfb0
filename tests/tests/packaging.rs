//! The `.deb` and `.rpm` packages (`make deb`, `make rpm`; metadata in
//! packaging/Cargo.toml): built from the release binaries, their file lists
//! and control data checked with `dpkg-deb` and `rpm`, the packaged
//! binaries run, and the `.deb` installed on this machine, used through
//! `/opt/cni/bin` in throwaway namespaces, and purged again.
//!
//! Needs cargo-deb and cargo-generate-rpm (`cargo install --locked
//! cargo-deb cargo-generate-rpm`), dpkg-deb and rpm (`apt-get install
//! rpm`); each test says SKIPPED and returns when a tool is missing.
//! The release build is reused when it is up to date.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const PACKAGE: &str = "cni-plugins";
const BINARIES: &[&str] = &[
    "bridge",
    "host-local",
    "loopback",
    "portmap",
    "static",
    "sbr",
    "host-device",
    "tuning",
    "firewall",
    "macvlan",
    "ipvlan",
    "vlan",
    "bandwidth",
    "dhcp",
    "cnictl",
];
/// The dhcp daemon's systemd units (socket activation, as podman's docs ask).
const SYSTEMD_UNITS: &[&str] = &["cni-dhcp.socket", "cni-dhcp.service"];
/// Where the packages put them: the administrator's unit directory, which
/// overrides the same-named units of the distribution's Go plugins.
const UNIT_DIR: &str = "/etc/systemd/system";
const BIN_DIR: &str = "/opt/cni/bin";
const DOC_DIR: &str = "/usr/share/doc/cni-plugins";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("run {:?}: {e}", cmd.get_program()))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({:?}):\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `program args` runs; prints a SKIPPED line naming the fix if not.
fn have(program: &str, args: &[&str], install: &str) -> bool {
    let ok = Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "SKIPPED: `{program} {}` unavailable ({install})",
            args.join(" ")
        );
    }
    ok
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn have_cargo_deb() -> bool {
    have(
        &cargo(),
        &["deb", "--version"],
        "cargo install --locked cargo-deb",
    ) && have("dpkg-deb", &["--version"], "apt-get install dpkg")
}

fn have_cargo_generate_rpm() -> bool {
    have(
        &cargo(),
        &["generate-rpm", "--version"],
        "cargo install --locked cargo-generate-rpm",
    ) && have("rpm", &["--version"], "apt-get install rpm")
}

/// The release binaries the packages ship, built once per test run (a
/// no-op when target/release is up to date).
fn release_build() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let mut cmd = Command::new(cargo());
            cmd.current_dir(repo())
                .args(["build", "--release", "--bins"]);
            for p in [
                "bridge",
                "host-local",
                "loopback",
                "portmap",
                "static",
                "sbr",
                "host-device",
                "tuning",
                "firewall",
                "bandwidth",
                "macvlan",
                "ipvlan",
                "vlan",
                "dhcp",
                "runtime",
                "demo",
            ] {
                cmd.args(["-p", p]);
            }
            run_ok(&mut cmd);
            target_dir().join("release")
        })
        .clone()
}

/// Packages go to target/packaging-test, not target/debian or
/// target/generate-rpm, so a test run never replaces what `make deb` made.
fn out_dir(kind: &str) -> PathBuf {
    let dir = target_dir().join("packaging-test").join(kind);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn only_file(dir: &Path, ext: &str) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one .{ext} in {}: {found:?}",
        dir.display()
    );
    found[0].clone()
}

fn build_deb() -> PathBuf {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        release_build();
        let dir = out_dir("deb");
        run_ok(
            Command::new(cargo())
                .current_dir(repo())
                .args(["deb", "-p", PACKAGE, "--no-build", "--output"])
                .arg(&dir),
        );
        only_file(&dir, "deb")
    })
    .clone()
}

fn build_rpm() -> PathBuf {
    static RPM: OnceLock<PathBuf> = OnceLock::new();
    RPM.get_or_init(|| {
        release_build();
        let dir = out_dir("rpm");
        run_ok(
            Command::new(cargo())
                .current_dir(repo())
                .args(["generate-rpm", "-p", "packaging", "-o"])
                .arg(&dir),
        );
        only_file(&dir, "rpm")
    })
    .clone()
}

fn workspace_version() -> String {
    let toml = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let line = toml
        .lines()
        .find(|l| l.starts_with("version = "))
        .expect("workspace version");
    line.trim_start_matches("version = ")
        .trim_matches('"')
        .to_string()
}

/// The example conflists the packages must carry: the bundled defaults
/// (conf/) and the documented examples (docs/runtimes/examples/).
fn example_conflists() -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    for dir in ["conf", "docs/runtimes/examples"] {
        for e in std::fs::read_dir(repo().join(dir)).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".conflist") {
                assert!(
                    found.insert(name.clone(), e.path()).is_none(),
                    "{name} exists in two places; the packages would ship one of them"
                );
            }
        }
    }
    assert!(found.contains_key("10-cni-rs.conflist"), "{found:?}");
    found
}

/// `(mode, path)` for every regular file in a listing whose lines are
/// `mode owner size date time path` (dpkg-deb -c) or
/// `mode links owner group size month day time path` (rpm -qlv).
fn files(listing: &str) -> BTreeMap<String, String> {
    listing
        .lines()
        .filter(|l| l.starts_with('-'))
        .map(|l| {
            let mode = l.split_whitespace().next().unwrap().to_string();
            let path = l.split_whitespace().last().unwrap();
            (path.trim_start_matches('.').to_string(), mode)
        })
        .collect()
}

fn expected_files() -> Vec<String> {
    let mut v: Vec<String> = BINARIES.iter().map(|b| format!("{BIN_DIR}/{b}")).collect();
    v.extend(
        example_conflists()
            .keys()
            .map(|n| format!("{DOC_DIR}/examples/{n}")),
    );
    v
}

/// The about text and VERSION answer of each plugin binary in `dir`.
fn assert_plugins_answer(dir: &Path) {
    for p in integration::PLUGINS {
        let bin = dir.join(p);
        let out = run(Command::new(&bin).env_clear());
        assert!(
            out.status.success(),
            "{} without CNI_COMMAND: {out:?}",
            bin.display()
        );
        let about = String::from_utf8_lossy(&out.stderr);
        assert!(
            about.contains(p) && about.contains(&workspace_version()) && about.contains("1.1.0"),
            "{} about text: {about}",
            bin.display()
        );
        let out = run(Command::new(&bin).env_clear().env("CNI_COMMAND", "VERSION"));
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{} VERSION: {e}: {out:?}", bin.display()));
        assert!(
            v["supportedVersions"]
                .as_array()
                .is_some_and(|s| s.contains(&json!("0.3.1")) && s.contains(&json!("1.1.0"))),
            "{}: {v}",
            bin.display()
        );
    }
}

#[test]
fn deb_ships_the_plugins_cnictl_and_the_example_conflists() {
    if !have_cargo_deb() {
        return;
    }
    let deb = build_deb();
    let listing = run_ok(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let files = files(&listing);
    for path in expected_files() {
        let mode = files
            .get(&path)
            .unwrap_or_else(|| panic!("{path} not in the .deb:\n{listing}"));
        let want = if path.starts_with(BIN_DIR) {
            "-rwxr-xr-x"
        } else {
            "-rw-r--r--"
        };
        assert_eq!(mode, want, "{path}");
    }
    for unit in SYSTEMD_UNITS {
        let path = format!("{UNIT_DIR}/{unit}");
        assert_eq!(
            files.get(&path).map(String::as_str),
            Some("-rw-r--r--"),
            "{path}"
        );
    }
    for path in files.keys() {
        assert!(
            path.starts_with(&format!("{BIN_DIR}/"))
                || path.starts_with(&format!("{DOC_DIR}/"))
                || path.starts_with(&format!("{UNIT_DIR}/cni-dhcp.")),
            "{path}: the package installs only plugins and documentation (never /etc/cni/net.d)"
        );
    }
    for line in listing.lines() {
        assert!(
            line.contains(" 0/0 ") || line.contains(" root/root "),
            "not root-owned: {line}"
        );
    }

    // The packaged files are the built binaries and the repository's
    // conflists, and the binaries work.
    let unpacked = integration::temp_dir("cnit-deb");
    run_ok(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(unpacked.path()),
    );
    let root = unpacked.path();
    assert_plugins_answer(&root.join("opt/cni/bin"));
    for (name, src) in example_conflists() {
        let packaged =
            std::fs::read(root.join(format!("usr/share/doc/cni-plugins/examples/{name}"))).unwrap();
        assert_eq!(packaged, std::fs::read(&src).unwrap(), "{name}");
        serde_json::from_slice::<Value>(&packaged).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let copyright =
        std::fs::read_to_string(root.join("usr/share/doc/cni-plugins/copyright")).unwrap();
    assert!(copyright.contains("Apache-2.0"), "{copyright}");
    assert!(
        copyright.contains("TERMS AND CONDITIONS FOR USE"),
        "licence text missing"
    );
}

#[test]
fn deb_control_fields() {
    if !have_cargo_deb() {
        return;
    }
    let deb = build_deb();
    let field = |name: &str| {
        run_ok(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name))
            .trim_end()
            .to_string()
    };
    assert_eq!(field("Package"), PACKAGE);
    assert_eq!(field("Version"), format!("{}-1", workspace_version()));
    let arch = run_ok(Command::new("dpkg").arg("--print-architecture"));
    assert_eq!(field("Architecture"), arch.trim());
    assert_eq!(field("Section"), "net");
    let depends = field("Depends");
    assert!(
        depends.split(", ").any(|d| d == "iptables | nftables"),
        "Depends: {depends}"
    );
    // dpkg-shlibdeps ($auto) adds libc6 exactly when the binaries are
    // dynamically linked: `make deb` ships static musl ones, this test
    // packages a host build.
    let bridge = std::fs::read(release_build().join("bridge")).unwrap();
    let dynamic = bridge.windows(8).any(|w| w == b"ld-linux");
    assert_eq!(
        depends.contains("libc6"),
        dynamic,
        "libc6 in Depends iff the binaries are dynamic: Depends: {depends}"
    );
    let description = field("Description");
    let (synopsis, long) = description.split_once('\n').expect("a long description");
    assert!(
        synopsis.len() < 80,
        "synopsis too long for Debian policy: {synopsis}"
    );
    for word in ["bridge", "host-local", "loopback", "portmap"] {
        assert!(synopsis.contains(word), "{synopsis}");
    }
    assert!(
        long.contains("/opt/cni/bin") && long.contains("cnictl"),
        "{long}"
    );
    assert!(!field("Maintainer").is_empty());
}

#[test]
fn rpm_ships_the_same_files_with_license_and_requirements() {
    if !have_cargo_generate_rpm() {
        return;
    }
    let rpm = build_rpm();
    let listing = run_ok(Command::new("rpm").arg("-qlvp").arg(&rpm));
    let files = files(&listing);
    for path in expected_files() {
        let mode = files
            .get(&path)
            .unwrap_or_else(|| panic!("{path} not in the .rpm:\n{listing}"));
        let want = if path.starts_with(BIN_DIR) {
            "-rwxr-xr-x"
        } else {
            "-rw-r--r--"
        };
        assert_eq!(mode, want, "{path}");
    }
    assert!(
        files.contains_key("/usr/share/licenses/cni-plugins/LICENSE"),
        "{listing}"
    );
    for unit in SYSTEMD_UNITS {
        let path = format!("{UNIT_DIR}/{unit}");
        assert_eq!(
            files.get(&path).map(String::as_str),
            Some("-rw-r--r--"),
            "{path}"
        );
    }
    for path in files.keys() {
        assert!(
            path.starts_with(&format!("{BIN_DIR}/"))
                || path.starts_with("/usr/share/")
                || path.starts_with(&format!("{UNIT_DIR}/cni-dhcp.")),
            "{path}: unexpected location"
        );
    }
    // The package plainly lists files (rpm -qlp) as well.
    let plain = run_ok(Command::new("rpm").arg("-qlp").arg(&rpm));
    for b in BINARIES {
        assert!(
            plain.lines().any(|l| l == format!("{BIN_DIR}/{b}")),
            "{plain}"
        );
    }

    let query = |fmt: &str| run_ok(Command::new("rpm").args(["-qp", "--qf", fmt]).arg(&rpm));
    assert_eq!(query("%{NAME}"), PACKAGE);
    assert_eq!(
        query("%{VERSION}-%{RELEASE}"),
        format!("{}-1", workspace_version())
    );
    assert_eq!(query("%{LICENSE}"), "Apache-2.0");
    assert!(query("%{SUMMARY}").contains("portmap"));
    let requires = query("[%{REQUIRENAME} %{REQUIREFLAGS:depflags} %{REQUIREVERSION}\n]");
    assert!(
        requires
            .lines()
            .any(|l| l.trim() == "(iptables or nftables)"),
        "{requires}"
    );
    assert!(
        !requires.lines().any(|l| l.starts_with("glibc")),
        "the rpm names no C library (the release binaries are static): {requires}"
    );
    assert!(
        !requires.contains("/bin/sh"),
        "no scriptlets, so no shell: {requires}"
    );

    // The binaries in the package are the release build, byte for byte.
    let digests = query("[%{FILENAMES} %{FILEDIGESTS}\n]");
    let release = release_build();
    for b in BINARIES {
        let path = format!("{BIN_DIR}/{b}");
        let digest = digests
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{path} ")))
            .unwrap_or_else(|| panic!("no digest for {path}: {digests}"));
        let sum = run_ok(Command::new("sha256sum").arg(release.join(b)));
        assert_eq!(sum.split_whitespace().next(), Some(digest), "{path}");
    }
}

/// Installs the .deb for the duration of a test; purges it on drop, also
/// when the test fails.
struct InstalledDeb;

impl Drop for InstalledDeb {
    fn drop(&mut self) {
        let out = Command::new("dpkg").args(["--purge", PACKAGE]).output();
        if !out.as_ref().is_ok_and(|o| o.status.success()) {
            eprintln!("dpkg --purge {PACKAGE} failed: {out:?}");
        }
    }
}

fn dpkg_status(package: &str) -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Why this machine cannot take the package without a risk of changing
/// something that is not ours, if so.
fn install_blocker() -> Option<String> {
    if !dpkg_status(PACKAGE).is_empty() && !dpkg_status(PACKAGE).contains("not-installed") {
        return Some(format!("{PACKAGE} is already installed"));
    }
    // dpkg silently replaces files no package owns: never let it.
    for b in BINARIES {
        let p = Path::new(BIN_DIR).join(b);
        if p.exists() || p.is_symlink() {
            return Some(format!("{} already exists", p.display()));
        }
    }
    if Path::new(DOC_DIR).exists() {
        return Some(format!("{DOC_DIR} already exists"));
    }
    for unit in SYSTEMD_UNITS {
        let p = Path::new(UNIT_DIR).join(unit);
        if p.exists() || p.is_symlink() {
            return Some(format!("{} already exists", p.display()));
        }
    }
    let owners = Command::new("dpkg").args(["-S", BIN_DIR]).output();
    if owners.as_ref().is_ok_and(|o| o.status.success()) {
        return Some(format!(
            "another package owns {BIN_DIR}: {}",
            String::from_utf8_lossy(&owners.unwrap().stdout).trim()
        ));
    }
    if !["iptables", "nftables"]
        .iter()
        .any(|p| dpkg_status(p).contains("install ok installed"))
    {
        return Some(
            "neither iptables nor nftables is installed (apt-get install iptables)".into(),
        );
    }
    None
}

/// Every existing directory on the way to the package's paths, and what
/// is in /opt/cni/bin: the state that must be back after the purge.
fn machine_state() -> Vec<String> {
    let mut v = Vec::new();
    for d in ["/opt", "/opt/cni", BIN_DIR, "/usr/share/doc"] {
        v.push(format!("{d}: exists={}", Path::new(d).exists()));
    }
    v.push(format!(
        "{BIN_DIR}: {:?}",
        integration::dir_entries(Path::new(BIN_DIR))
    ));
    for unit in SYSTEMD_UNITS {
        let p = Path::new(UNIT_DIR).join(unit);
        v.push(format!("{}: exists={}", p.display(), p.exists()));
    }
    v
}

#[test]
fn deb_installs_works_from_opt_cni_bin_and_purges_cleanly() {
    if !integration::can_run()
        || !have_cargo_deb()
        || !have("dpkg", &["--version"], "not a Debian system")
    {
        return;
    }
    if let Some(why) = install_blocker() {
        eprintln!("SKIPPED: not installing the .deb on this machine: {why}");
        return;
    }
    let deb = build_deb();
    let before = machine_state();
    {
        let _installed = InstalledDeb;
        run_ok(Command::new("dpkg").arg("-i").arg(&deb));
        assert!(dpkg_status(PACKAGE).contains("install ok installed"));
        assert_plugins_answer(Path::new(BIN_DIR));
        let help = run(Command::new(Path::new(BIN_DIR).join("cnictl")).arg("--help"));
        assert!(
            String::from_utf8_lossy(&help.stdout).contains("usage: cnictl"),
            "{help:?}"
        );

        attach_and_detach_with_the_installed_package();
        demo_runs_against_the_installed_plugins();
    }
    assert!(
        dpkg_status(PACKAGE).is_empty() || dpkg_status(PACKAGE).contains("not-installed"),
        "still installed: {}",
        dpkg_status(PACKAGE)
    );
    assert_eq!(
        machine_state(),
        before,
        "the purge did not restore the machine"
    );
}

/// The demo (the main job) against the packaged plugins in /opt/cni/bin:
/// it must get through every step and report that nothing was left.
fn demo_runs_against_the_installed_plugins() {
    let demo = release_build().join("cni-demo");
    let out = run(Command::new(&demo).args(["--cni-path", BIN_DIR]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("==> done"),
        "cni-demo against {BIN_DIR} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("hello from container a"), "{text}");
}

/// The installed cnictl runs the installed example conflist (bridge +
/// host-local + portmap) from /opt/cni/bin against a throwaway container,
/// with the "host" a throwaway namespace too and the IPAM store and result
/// cache in temporary directories.
fn attach_and_detach_with_the_installed_package() {
    let example = format!("{DOC_DIR}/examples/10-cni-rs.conflist");
    let mut conf: Value =
        serde_json::from_str(&std::fs::read_to_string(&example).unwrap()).unwrap();
    let state = integration::temp_dir("cnit-deb-state");
    let conf_dir = state.path().join("net.d");
    std::fs::create_dir(&conf_dir).unwrap();
    let data_dir = state.path().join("networks");
    let cache_dir = state.path().join("cache");
    conf["plugins"][0]["ipam"]["dataDir"] = json!(data_dir);
    conf["plugins"][0]["ipam"]["ranges"] = json!([[{ "subnet": "10.203.0.0/24" }]]);
    std::fs::write(conf_dir.join("10-cni-rs.conflist"), conf.to_string()).unwrap();
    let net = conf["name"].as_str().unwrap().to_string();

    let host = integration::Netns::new("cnit-debhost");
    let ctr = integration::Netns::bare("cnit-debctr");
    let baseline = without_empty_netfilter_tables(&host.snapshot());
    let cnictl = |verb: &str| {
        let mut cmd = host.command(Path::new(BIN_DIR).join("cnictl"));
        cmd.arg("--conf-dir")
            .arg(&conf_dir)
            .args(["--cni-path", BIN_DIR, "--cache-dir"])
            .arg(&cache_dir)
            .args([verb, &net, &ctr.path_str()]);
        run_ok(&mut cmd)
    };
    cnictl("add");
    let addrs = ctr.addresses("eth0");
    assert!(
        addrs
            .iter()
            .any(|a| a.starts_with("10.203.0.") && a.ends_with("/24")),
        "{addrs:?}"
    );
    assert!(host.has_link("cni-rs0"));
    assert!(ctr.ping("10.203.0.1"), "container cannot reach its gateway");
    cnictl("del");
    assert!(!ctr.has_link("eth0"));
    // The bridge stays, as with the reference; no address, rule or veth is
    // left behind.
    host.run_ok("ip", &["link", "del", "cni-rs0"]);
    assert_eq!(without_empty_netfilter_tables(&host.snapshot()), baseline);
}

/// A snapshot without netfilter's table and chain skeletons: the first
/// iptables call in a namespace creates the built-in chains for good, rules
/// or not. Every rule line stays.
fn without_empty_netfilter_tables(snapshot: &str) -> String {
    snapshot
        .lines()
        .filter(|l| {
            let t = l.trim();
            !(t.starts_with('*')
                || t.starts_with(':')
                || t == "COMMIT"
                || t.starts_with("table ")
                || t.starts_with("chain ")
                || t.starts_with("type ")
                || t == "}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every conflist the packages ship as an example works as documented:
/// run with cnictl (the project's own binaries) against a throwaway
/// container, with a hostPort where the list has portmap, and gone again
/// after DEL.
#[test]
fn every_shipped_example_conflist_attaches_and_detaches() {
    if !integration::can_run() {
        return;
    }
    for (name, path) in example_conflists() {
        let mut conf: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        // The macvlan and host-device lists name a host device (`master`,
        // `device`) that a throwaway namespace does not have: their own
        // tests (macvlan.rs, host_device.rs) run them on a LAN they build.
        let first = conf["plugins"][0]["type"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if !matches!(first.as_str(), "bridge" | "loopback") {
            eprintln!(
                "{name}: {first} needs a host device; run by tests/tests/{}.rs",
                first.replace('-', "_")
            );
            continue;
        }
        let state = integration::temp_dir("cnit-example");
        let conf_dir = state.path().join("net.d");
        std::fs::create_dir(&conf_dir).unwrap();
        let mut subnets = Vec::new();
        let mut has_portmap = false;
        for plugin in conf["plugins"].as_array_mut().unwrap() {
            has_portmap |= plugin["type"] == "portmap";
            if plugin["ipam"]["type"] == "host-local" {
                plugin["ipam"]["dataDir"] = json!(state.path().join("ipam"));
                for set in plugin["ipam"]["ranges"].as_array().unwrap() {
                    subnets.push(set[0]["subnet"].as_str().unwrap().to_string());
                }
            }
            if plugin["ipam"]["type"] == "static" {
                for a in plugin["ipam"]["addresses"].as_array().unwrap() {
                    subnets.push(a["address"].as_str().unwrap().to_string());
                }
            }
        }
        std::fs::write(conf_dir.join(&name), conf.to_string()).unwrap();
        let net = conf["name"].as_str().unwrap().to_string();

        let host = integration::Netns::new("cnit-exhost");
        let ctr = integration::Netns::bare("cnit-exctr");
        let cnictl = |verb: &str| {
            let mut cmd = host.command(integration::plugin("cnictl"));
            cmd.arg("--conf-dir")
                .arg(&conf_dir)
                .arg("--cni-path")
                .arg(integration::bin_dir())
                .arg("--cache-dir")
                .arg(state.path().join("cache"))
                .args([
                    "--cap-args",
                    r#"{"portMappings":[{"hostPort":18080,"containerPort":80,"protocol":"tcp"}]}"#,
                    verb,
                    &net,
                    &ctr.path_str(),
                ]);
            run_ok(&mut cmd)
        };
        cnictl("add");
        if subnets.is_empty() {
            // The loopback list: `lo` is up, nothing else.
            let lo = ctr.ip_json(&["link", "show", "lo"]);
            assert!(
                lo[0]["flags"].as_array().unwrap().contains(&json!("UP")),
                "{name}: {lo}"
            );
        }
        if !subnets.is_empty() {
            let addrs = ctr.addresses("eth0");
            for subnet in &subnets {
                assert!(
                    addrs.iter().any(|a| in_subnet(a, subnet)),
                    "{name}: no address from {subnet} on eth0: {addrs:?}"
                );
            }
        }
        if has_portmap {
            assert!(
                host.netfilter().contains("18080"),
                "{name}: no hostPort rule:\n{}",
                host.netfilter()
            );
        }
        cnictl("del");
        assert!(!ctr.has_link("eth0"), "{name}: eth0 left");
        assert!(
            !host.netfilter().contains("18080"),
            "{name}: hostPort rule left"
        );
        let reservations: Vec<String> =
            integration::dir_entries(&state.path().join("ipam").join(&net))
                .into_iter()
                .filter(|f| f.parse::<std::net::IpAddr>().is_ok())
                .collect();
        assert!(reservations.is_empty(), "{name}: {reservations:?}");
    }
}

/// Whether `addr` ("ADDR/LEN") lies in `subnet` ("NET/LEN").
fn in_subnet(addr: &str, subnet: &str) -> bool {
    use std::net::IpAddr;
    let ip = |s: &str| s.split('/').next().unwrap().parse::<IpAddr>().unwrap();
    let len: u32 = subnet.split('/').nth(1).unwrap().parse().unwrap();
    match (ip(addr), ip(subnet)) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}
