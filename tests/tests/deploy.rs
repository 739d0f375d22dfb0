//! The Kubernetes deployment: `deploy/install-cni.sh` run exactly as the
//! DaemonSet runs it, but against temporary directories standing in for the
//! node's /opt/cni/bin and /etc/cni/net.d (and a local stand-in for the API
//! server); `deploy/daemonset.yaml` checked against the Kubernetes schema
//! for every field it uses and against the script and the Containerfile.
//!
//! The image itself cannot be built here (no container engine with a
//! registry), so these tests are what keeps its three parts consistent.

use integration::Netns;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn script() -> PathBuf {
    repo().join("deploy/install-cni.sh")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// A node as the installer sees it: the image's binaries (symlinks to the
/// built ones, so only the install itself copies) and the node's two
/// directories, all in one temporary directory.
struct Node {
    _dir: tempfile::TempDir,
    src: PathBuf,
    bin: PathBuf,
    net: PathBuf,
}

impl Node {
    fn new(binaries: &[&str]) -> Self {
        let dir = integration::temp_dir("cnit-deploy");
        let (src, bin, net) = (
            dir.path().join("image-bin"),
            dir.path().join("opt-cni-bin"),
            dir.path().join("etc-cni-net.d"),
        );
        for d in [&src, &bin, &net] {
            std::fs::create_dir(d).unwrap();
        }
        for b in binaries {
            std::os::unix::fs::symlink(integration::plugin(b), src.join(b)).unwrap();
        }
        Node {
            _dir: dir,
            src,
            bin,
            net,
        }
    }

    fn conflist_path(&self) -> PathBuf {
        self.net.join("10-cni-rs.conflist")
    }

    fn conflist(&self) -> Value {
        let text = std::fs::read_to_string(self.conflist_path()).expect("conflist written");
        serde_json::from_str(&text).expect("conflist is JSON")
    }

    /// The installer's command with only PATH and the node's directories
    /// in its environment, plus `env`.
    fn command(&self, env: &[(&str, &str)]) -> Command {
        self.command_in(None, env)
    }

    /// The same, with the installer running inside `ns` (for host-gw
    /// routes, which it writes into its own network namespace).
    fn command_in(&self, ns: Option<&Netns>, env: &[(&str, &str)]) -> Command {
        let mut cmd = match ns {
            Some(ns) => ns.command("sh"),
            None => Command::new("sh"),
        };
        cmd.arg(script())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SRC_BIN_DIR", &self.src)
            .env("HOST_BIN_DIR", &self.bin)
            .env("HOST_NET_DIR", &self.net)
            .env(
                "CONFLIST_TEMPLATE",
                repo().join("deploy/10-cni-rs.conflist.template"),
            );
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    fn install(&self, env: &[(&str, &str)]) -> Output {
        self.command(env).output().expect("run install-cni.sh")
    }
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}stderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "install-cni.sh failed: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn host_local_ipam(conflist: &Value) -> &Value {
    &conflist["plugins"][0]["ipam"]
}

#[test]
fn installs_every_binary_and_a_conflist_for_the_node_pod_cidr() {
    let node = Node::new(integration::PLUGINS);
    let log = ok(node.install(&[("POD_CIDRS", "10.244.3.0/24")]));

    for name in integration::PLUGINS {
        let installed = node.bin.join(name);
        let meta = std::fs::metadata(&installed).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o755, "{name} mode");
        assert!(
            std::fs::read(&installed).unwrap() == std::fs::read(integration::plugin(name)).unwrap(),
            "{name} is not a copy of the built binary"
        );
        assert!(log.contains(&format!("installed {}", installed.display())));
    }
    // No temporary file is left behind in either host directory.
    let mut expected: Vec<String> = integration::PLUGINS.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(integration::dir_entries(&node.bin), expected);
    assert_eq!(
        integration::dir_entries(&node.net),
        vec!["10-cni-rs.conflist"]
    );

    let conf = node.conflist();
    assert_eq!(conf["name"], "cni-rs");
    assert_eq!(conf["plugins"][0]["type"], "bridge");
    assert_eq!(conf["plugins"][0]["ipMasq"], true);
    assert_eq!(conf["plugins"][1]["type"], "portmap");
    let ipam = host_local_ipam(&conf);
    assert_eq!(ipam["type"], "host-local");
    assert_eq!(ipam["ranges"], json!([[{ "subnet": "10.244.3.0/24" }]]));
    assert_eq!(ipam["routes"], json!([{ "dst": "0.0.0.0/0" }]));
    let mode = std::fs::metadata(node.conflist_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);

    // The installed copy is what kubelet's runtime will exec.
    let out = Command::new(node.bin.join("loopback"))
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .output()
        .unwrap();
    let version: Value = serde_json::from_slice(&out.stdout).expect("VERSION JSON");
    assert!(
        version["supportedVersions"]
            .as_array()
            .is_some_and(|v| v.contains(&json!("1.0.0"))),
        "{version}"
    );
}

#[test]
fn dual_stack_node_gets_one_range_set_and_default_route_per_family() {
    let node = Node::new(&["loopback"]);
    ok(node.install(&[
        ("POD_CIDRS", "10.244.7.0/24,fd00:10:244:7::/64"),
        ("IP_MASQ", "false"),
    ]));
    let conf = node.conflist();
    let ipam = host_local_ipam(&conf);
    assert_eq!(
        ipam["ranges"],
        json!([[{ "subnet": "10.244.7.0/24" }], [{ "subnet": "fd00:10:244:7::/64" }]])
    );
    assert_eq!(
        ipam["routes"],
        json!([{ "dst": "0.0.0.0/0" }, { "dst": "::/0" }])
    );
    assert_eq!(conf["plugins"][0]["ipMasq"], false);
}

#[test]
fn an_existing_conflist_is_kept_unless_overwrite_is_asked_for() {
    let node = Node::new(&["loopback"]);
    let theirs = "{\"cniVersion\":\"1.0.0\",\"name\":\"hand-written\",\"plugins\":[]}\n";
    std::fs::write(node.conflist_path(), theirs).unwrap();

    let log = ok(node.install(&[("POD_CIDRS", "10.244.3.0/24")]));
    assert!(log.contains("keeping existing"), "{log}");
    assert_eq!(
        std::fs::read_to_string(node.conflist_path()).unwrap(),
        theirs
    );
    assert_eq!(
        integration::dir_entries(&node.net),
        vec!["10-cni-rs.conflist"],
        "temporary file left behind"
    );

    let log = ok(node.install(&[
        ("POD_CIDRS", "10.244.3.0/24"),
        ("OVERWRITE_CONFLIST", "true"),
    ]));
    assert!(log.contains("wrote"), "{log}");
    assert_eq!(node.conflist()["name"], "cni-rs");

    // A second run with the same inputs changes nothing.
    let before = std::fs::metadata(node.bin.join("loopback"))
        .unwrap()
        .modified()
        .unwrap();
    let log = ok(node.install(&[("POD_CIDRS", "10.244.3.0/24")]));
    assert!(
        log.contains("unchanged") && !log.contains("installed"),
        "{log}"
    );
    let after = std::fs::metadata(node.bin.join("loopback"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after, "an identical binary was rewritten");
}

#[test]
fn a_conflist_sorting_first_is_reported() {
    let node = Node::new(&["loopback"]);
    std::fs::write(node.net.join("05-other.conflist"), "{}").unwrap();
    let log = ok(node.install(&[("POD_CIDRS", "10.244.3.0/24")]));
    assert!(
        log.contains("warning: 05-other.conflist sorts before 10-cni-rs.conflist"),
        "{log}"
    );
}

#[test]
fn bad_input_fails_before_anything_is_installed() {
    for (env, message) in [
        (vec![("POD_CIDRS", "10.244.3.0/24,*")], "not a CIDR: \"*\""),
        (vec![("POD_CIDRS", "10.244.3.0")], "not a CIDR"),
        (vec![], "neither POD_CIDRS nor NODE_NAME is set"),
        (
            vec![("POD_CIDRS", "10.244.3.0/24"), ("IP_MASQ", "yes")],
            "IP_MASQ must be true or false",
        ),
    ] {
        let node = Node::new(&["loopback"]);
        let out = node.install(&env);
        assert!(!out.status.success(), "{env:?} succeeded: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(message),
            "{env:?}: {}",
            text(&out)
        );
        assert!(integration::dir_entries(&node.net).is_empty(), "{env:?}");
        if env.iter().all(|(k, _)| *k != "IP_MASQ") {
            assert!(integration::dir_entries(&node.bin).is_empty(), "{env:?}");
        }
    }
}

#[test]
fn a_binary_that_does_not_run_on_the_node_fails_the_install() {
    let node = Node::new(&[]);
    let fake = node.src.join("bridge");
    std::fs::write(&fake, "#!/bin/sh\necho 'exec format error' >&2\nexit 126\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = node.install(&[("POD_CIDRS", "10.244.3.0/24")]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not run on this node"),
        "{}",
        text(&out)
    );
    assert!(integration::dir_entries(&node.net).is_empty());
}

/// The DaemonSet drops every capability but NET_ADMIN (for host-gw
/// routes): root's plain file permissions on the host directories must be
/// enough for the install itself.
#[test]
fn installs_without_any_capability() {
    if !integration::can_run() {
        return;
    }
    let node = Node::new(&["loopback"]);
    let cmd = node.command(&[("POD_CIDRS", "10.244.3.0/24")]);
    let inner: Vec<_> = std::iter::once(cmd.get_program().to_owned())
        .chain(cmd.get_args().map(|a| a.to_owned()))
        .collect();
    let mut wrapped = Command::new("setpriv");
    wrapped
        .args(["--bounding-set", "-all", "--inh-caps", "-all", "--"])
        .args(&inner);
    wrapped.env_clear();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            wrapped.env(k, v);
        }
    }
    // Prove the wrapper really leaves the process without capabilities.
    let status = Command::new("setpriv")
        .args(["--bounding-set", "-all", "--inh-caps", "-all", "--"])
        .args(["grep", "^CapEff:", "/proc/self/status"])
        .output()
        .expect("run setpriv (util-linux)");
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("0000000000000000"),
        "{}",
        text(&status)
    );
    ok(wrapped.output().unwrap());
    assert_eq!(integration::dir_entries(&node.bin), vec!["loopback"]);
    assert_eq!(
        host_local_ipam(&node.conflist())["ranges"],
        json!([[{ "subnet": "10.244.3.0/24" }]])
    );
}

/// A stand-in for the API server: answers every request with `status` and
/// `body` (or, with `start_routes`, the body for the request's path, 404
/// for others), recording the request line and the Authorization header.
struct FakeApiServer {
    url: String,
    requests: Arc<Mutex<Vec<(String, String)>>>,
}

impl FakeApiServer {
    fn start(status: &'static str, body: Value) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Self::serve(listener, move |_| (status, body.to_string()))
    }

    /// Serves `routes` (path → body) from inside `ns`, where the installer
    /// under test runs.
    fn start_routes(ns: &Netns, routes: Vec<(&'static str, Value)>) -> Self {
        let handle = netns::NetNs::open(ns.path()).unwrap();
        let listener = handle
            .run(|| TcpListener::bind("127.0.0.1:0"))
            .unwrap()
            .unwrap();
        let routes: BTreeMap<String, String> = routes
            .into_iter()
            .map(|(p, v)| (p.to_string(), v.to_string()))
            .collect();
        Self::serve(listener, move |request_line| {
            let path = request_line.split_whitespace().nth(1).unwrap_or("");
            match routes.get(path) {
                Some(body) => ("200 OK", body.clone()),
                None => ("404 Not Found", "{}".to_string()),
            }
        })
    }

    fn serve(
        listener: TcpListener,
        respond: impl Fn(&str) -> (&'static str, String) + Send + 'static,
    ) -> Self {
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                let _ = reader.read_line(&mut request_line);
                let mut auth = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.strip_prefix("Authorization: ") {
                        auth = v.trim().to_string();
                    }
                }
                let (status, body) = respond(&request_line);
                seen.lock()
                    .unwrap()
                    .push((request_line.trim().to_string(), auth));
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        FakeApiServer { url, requests }
    }
}

fn have_curl() -> bool {
    let found = Command::new("curl").arg("--version").output().is_ok();
    if !found {
        eprintln!("SKIPPED: curl not installed (apt-get install curl)");
    }
    found
}

fn service_account(dir: &Path) -> PathBuf {
    let sa = dir.join("serviceaccount");
    std::fs::create_dir(&sa).unwrap();
    std::fs::write(sa.join("token"), "test-token-123").unwrap();
    sa
}

#[test]
fn pod_cidrs_are_read_from_the_node_object() {
    if !have_curl() {
        return;
    }
    let api = FakeApiServer::start(
        "200 OK",
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": { "name": "node-b" },
            "spec": { "podCIDR": "10.244.9.0/24", "podCIDRs": ["10.244.9.0/24", "fd00:10:244:9::/64"] }
        }),
    );
    let node = Node::new(&["loopback"]);
    let tmp = integration::temp_dir("cnit-sa");
    let sa = service_account(tmp.path());
    ok(node.install(&[
        ("NODE_NAME", "node-b"),
        ("K8S_API", &api.url),
        ("SA_DIR", sa.to_str().unwrap()),
    ]));

    let requests = api.requests.lock().unwrap().clone();
    assert_eq!(
        requests,
        vec![(
            "GET /api/v1/nodes/node-b HTTP/1.1".to_string(),
            "Bearer test-token-123".to_string()
        )]
    );
    assert_eq!(
        host_local_ipam(&node.conflist())["ranges"],
        json!([[{ "subnet": "10.244.9.0/24" }], [{ "subnet": "fd00:10:244:9::/64" }]])
    );
}

#[test]
fn a_node_without_a_pod_cidr_or_an_api_refusal_installs_nothing() {
    if !have_curl() {
        return;
    }
    let no_cidr = FakeApiServer::start(
        "200 OK",
        json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": "node-c" }, "spec": {} }),
    );
    let forbidden = FakeApiServer::start(
        "403 Forbidden",
        json!({ "kind": "Status", "reason": "Forbidden" }),
    );
    for (api, message) in [
        (&no_cidr, "node node-c has no spec.podCIDR after 0s"),
        (&forbidden, "read node node-c from"),
    ] {
        let node = Node::new(&["loopback"]);
        let tmp = integration::temp_dir("cnit-sa");
        let sa = service_account(tmp.path());
        let out = node.install(&[
            ("NODE_NAME", "node-c"),
            ("K8S_API", &api.url),
            ("SA_DIR", sa.to_str().unwrap()),
            ("PODCIDR_WAIT_SECONDS", "0"),
        ]);
        assert!(!out.status.success(), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(message),
            "{}",
            text(&out)
        );
        assert!(integration::dir_entries(&node.bin).is_empty());
        assert!(integration::dir_entries(&node.net).is_empty());
    }
}

#[test]
fn keeps_running_until_sigterm_when_asked_to() {
    let node = Node::new(&["loopback"]);
    let mut child = node
        .command(&[
            ("POD_CIDRS", "10.244.3.0/24"),
            ("SLEEP_AFTER_INSTALL", "true"),
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Installed, and still running.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !node.conflist_path().exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no conflist after 20s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "exited after install");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running 10s after SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "SIGTERM exit: {status:?}");
    let leftovers = processes_with_env(&format!("SRC_BIN_DIR={}", node.src.display()));
    assert!(leftovers.is_empty(), "left running: {leftovers:?}");
}

/// Pids of processes whose environment contains `entry` (`K=V`).
fn processes_with_env(entry: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(env) = std::fs::read(e.path().join("environ"))
            && env.split(|b| *b == 0).any(|kv| kv == entry.as_bytes())
        {
            found.push(pid);
        }
    }
    found
}

// ---------------------------------------------------------------------------
// deploy/daemonset.yaml: every field it uses, typed after the Kubernetes API
// (deny_unknown_fields catches a misspelt or misplaced key, which kubectl
// would reject or, worse, silently drop).

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ObjectMeta {
    name: String,
    namespace: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServiceAccount {
    api_version: String,
    metadata: ObjectMeta,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PolicyRule {
    api_groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ClusterRole {
    api_version: String,
    metadata: ObjectMeta,
    rules: Vec<PolicyRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RoleRef {
    api_group: String,
    kind: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Subject {
    kind: String,
    name: String,
    namespace: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ClusterRoleBinding {
    api_version: String,
    metadata: ObjectMeta,
    role_ref: RoleRef,
    subjects: Vec<Subject>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DaemonSet {
    api_version: String,
    metadata: ObjectMeta,
    spec: DaemonSetSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DaemonSetSpec {
    selector: LabelSelector,
    update_strategy: Option<UpdateStrategy>,
    template: PodTemplate,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LabelSelector {
    match_labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UpdateStrategy {
    #[serde(rename = "type")]
    kind: String,
    rolling_update: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PodTemplate {
    metadata: TemplateMeta,
    spec: PodSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TemplateMeta {
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PodSpec {
    service_account_name: String,
    host_network: bool,
    priority_class_name: Option<String>,
    #[serde(default)]
    node_selector: BTreeMap<String, String>,
    tolerations: Vec<Toleration>,
    termination_grace_period_seconds: Option<u32>,
    #[serde(default)]
    init_containers: Vec<Container>,
    containers: Vec<Container>,
    volumes: Vec<Volume>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Toleration {
    key: Option<String>,
    operator: Option<String>,
    effect: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Container {
    name: String,
    image: String,
    image_pull_policy: Option<String>,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    env: Vec<EnvVar>,
    resources: Option<Value>,
    security_context: Option<SecurityContext>,
    #[serde(default)]
    volume_mounts: Vec<VolumeMount>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EnvVar {
    name: String,
    // Kubernetes takes only strings here: an unquoted `true` would be
    // rejected by the API server, and fails to decode as String here.
    value: Option<String>,
    value_from: Option<EnvVarSource>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EnvVarSource {
    field_ref: FieldRef,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FieldRef {
    field_path: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SecurityContext {
    run_as_user: Option<i64>,
    allow_privilege_escalation: Option<bool>,
    read_only_root_filesystem: Option<bool>,
    capabilities: Option<Capabilities>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Capabilities {
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    drop: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct VolumeMount {
    name: String,
    mount_path: String,
    read_only: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Volume {
    name: String,
    host_path: HostPath,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HostPath {
    path: String,
    #[serde(rename = "type")]
    kind: Option<String>,
}

struct Manifest {
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    bindings: Vec<ClusterRoleBinding>,
    daemon_sets: Vec<DaemonSet>,
}

fn decode<T: serde::de::DeserializeOwned>(doc: Value, what: &str) -> T {
    serde_json::from_value(doc).unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn manifest() -> Manifest {
    let text = read("deploy/daemonset.yaml");
    let mut m = Manifest {
        service_accounts: vec![],
        cluster_roles: vec![],
        bindings: vec![],
        daemon_sets: vec![],
    };
    for doc in serde_norway::Deserializer::from_str(&text) {
        let mut doc = Value::deserialize(doc).expect("valid YAML");
        let kind = doc["kind"]
            .as_str()
            .expect("every document has a kind")
            .to_string();
        doc.as_object_mut().unwrap().remove("kind");
        match kind.as_str() {
            "ServiceAccount" => m.service_accounts.push(decode(doc, &kind)),
            "ClusterRole" => m.cluster_roles.push(decode(doc, &kind)),
            "ClusterRoleBinding" => m.bindings.push(decode(doc, &kind)),
            "DaemonSet" => m.daemon_sets.push(decode(doc, &kind)),
            other => panic!("unexpected kind {other}"),
        }
    }
    m
}

/// RFC 1123 label, as Kubernetes requires for these names.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Default of `VAR` in the installer (`VAR=${VAR:-default}`).
fn script_default(var: &str) -> String {
    let text = read("deploy/install-cni.sh");
    let prefix = format!("{var}=${{{var}:-");
    let line = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("install-cni.sh has no default for {var}"));
    line[prefix.len()..line.len() - 1].to_string()
}

#[test]
fn manifest_objects_have_the_expected_kinds_versions_and_names() {
    let m = manifest();
    assert_eq!(m.service_accounts.len(), 1);
    assert_eq!(m.cluster_roles.len(), 1);
    assert_eq!(m.bindings.len(), 1);
    assert_eq!(m.daemon_sets.len(), 1);

    let sa = &m.service_accounts[0];
    assert_eq!(sa.api_version, "v1");
    let role = &m.cluster_roles[0];
    assert_eq!(role.api_version, "rbac.authorization.k8s.io/v1");
    let binding = &m.bindings[0];
    assert_eq!(binding.api_version, "rbac.authorization.k8s.io/v1");
    let ds = &m.daemon_sets[0];
    assert_eq!(ds.api_version, "apps/v1");

    for meta in [&sa.metadata, &ds.metadata] {
        assert!(is_dns_label(&meta.name), "{}", meta.name);
        assert_eq!(meta.namespace.as_deref(), Some("kube-system"));
    }
    for meta in [&role.metadata, &binding.metadata] {
        assert!(is_dns_label(&meta.name), "{}", meta.name);
        assert_eq!(meta.namespace, None, "{} is cluster-scoped", meta.name);
    }

    // The service account may read Node objects (its own for
    // spec.podCIDRs, all of them for host-gw routes), and nothing else.
    assert_eq!(role.rules.len(), 1);
    let rule = &role.rules[0];
    assert_eq!(rule.api_groups, vec![""]);
    assert_eq!(rule.resources, vec!["nodes"]);
    assert_eq!(rule.verbs, vec!["get", "list"]);
    assert_eq!(binding.role_ref.api_group, "rbac.authorization.k8s.io");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(binding.role_ref.name, role.metadata.name);
    assert_eq!(binding.subjects.len(), 1);
    let subject = &binding.subjects[0];
    assert_eq!(subject.kind, "ServiceAccount");
    assert_eq!(subject.name, sa.metadata.name);
    assert_eq!(subject.namespace, sa.metadata.namespace);
    assert_eq!(ds.spec.template.spec.service_account_name, sa.metadata.name);
}

#[test]
fn daemonset_runs_on_every_node_with_the_host_directories_the_script_writes() {
    let m = manifest();
    let ds = &m.daemon_sets[0];
    for (k, v) in &ds.spec.selector.match_labels {
        assert_eq!(
            ds.spec.template.metadata.labels.get(k),
            Some(v),
            "selector {k}={v} does not match the pod template"
        );
    }
    for (k, v) in &ds.metadata.labels {
        assert!(!k.is_empty() && !v.is_empty());
    }
    if let Some(strategy) = &ds.spec.update_strategy {
        assert!(["RollingUpdate", "OnDelete"].contains(&strategy.kind.as_str()));
        assert!(strategy.rolling_update.is_none() || strategy.kind == "RollingUpdate");
    }

    let pod = &ds.spec.template.spec;
    // Before the CNI config exists only host-network pods can start.
    assert!(pod.host_network);
    // Tolerate every taint, in particular the not-ready one a node has
    // until this pod installed the CNI config.
    assert!(
        pod.tolerations.iter().any(|t| t.key.is_none()
            && t.operator.as_deref() == Some("Exists")
            && t.effect.is_none()),
        "no toleration for every taint"
    );
    assert_eq!(
        pod.node_selector
            .get("kubernetes.io/os")
            .map(String::as_str),
        Some("linux")
    );
    if let Some(p) = &pod.priority_class_name {
        assert!(["system-node-critical", "system-cluster-critical"].contains(&p.as_str()));
    }
    assert!(
        pod.termination_grace_period_seconds
            .is_some_and(|s| s <= 30)
    );

    // Volumes: the node's two CNI directories.
    let host_path_of: BTreeMap<&str, &HostPath> = pod
        .volumes
        .iter()
        .map(|v| (v.name.as_str(), &v.host_path))
        .collect();
    assert_eq!(
        host_path_of.len(),
        pod.volumes.len(),
        "duplicate volume names"
    );
    for v in &pod.volumes {
        assert!(is_dns_label(&v.name));
        assert_eq!(v.host_path.kind.as_deref(), Some("DirectoryOrCreate"));
    }

    assert!(pod.init_containers.is_empty());
    assert_eq!(pod.containers.len(), 1);
    let c = &pod.containers[0];
    assert!(is_dns_label(&c.name));
    assert!(!c.image.is_empty());
    assert!(
        c.image_pull_policy
            .as_deref()
            .is_none_or(|p| ["Always", "IfNotPresent", "Never"].contains(&p))
    );
    assert!(c.resources.is_some(), "no resource requests");
    assert_eq!(c.command, vec!["/install-cni.sh"]);

    // Each mount is a declared volume; the two host directories are
    // mounted exactly where the script writes by default.
    let mount_of: BTreeMap<&str, &str> = c
        .volume_mounts
        .iter()
        .map(|m| {
            assert!(
                host_path_of.contains_key(m.name.as_str()),
                "mount of undeclared volume {}",
                m.name
            );
            assert_ne!(m.read_only, Some(true), "{} must be writable", m.name);
            (
                host_path_of[m.name.as_str()].path.as_str(),
                m.mount_path.as_str(),
            )
        })
        .collect();
    assert_eq!(
        mount_of.get("/opt/cni/bin").copied(),
        Some(script_default("HOST_BIN_DIR").as_str())
    );
    assert_eq!(
        mount_of.get("/etc/cni/net.d").copied(),
        Some(script_default("HOST_NET_DIR").as_str())
    );

    // Environment: only variables the script reads, as strings; the node
    // name from the downward API.
    let script = read("deploy/install-cni.sh");
    let env: BTreeMap<&str, &EnvVar> = c.env.iter().map(|e| (e.name.as_str(), e)).collect();
    for name in env.keys() {
        assert!(
            script.contains(&format!("{name}=${{{name}:-")),
            "env {name} is not read by install-cni.sh"
        );
    }
    let node_name = env.get("NODE_NAME").expect("NODE_NAME env");
    assert_eq!(
        node_name
            .value_from
            .as_ref()
            .map(|s| s.field_ref.field_path.as_str()),
        Some("spec.nodeName")
    );
    assert_eq!(
        env.get("SLEEP_AFTER_INSTALL")
            .and_then(|e| e.value.as_deref()),
        Some("true"),
        "the pod must stay Running after the install"
    );
    for e in env.values() {
        assert!(
            e.value.is_some() != e.value_from.is_some(),
            "{}: exactly one of value and valueFrom",
            e.name
        );
    }
    for boolean in ["OVERWRITE_CONFLIST", "IP_MASQ"] {
        if let Some(v) = env.get(boolean).and_then(|e| e.value.as_deref()) {
            assert!(v == "true" || v == "false", "{boolean}={v}");
        }
    }

    // Least privilege: NET_ADMIN only, and only for host-gw routes (the
    // install itself works without any capability: see
    // installs_without_any_capability).
    let sc = c.security_context.as_ref().expect("securityContext");
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop, vec!["ALL"]);
    let routes = env.get("NODE_ROUTES").and_then(|e| e.value.as_deref());
    assert!(
        matches!(routes, Some("host-gw" | "none")),
        "NODE_ROUTES={routes:?}"
    );
    if routes == Some("host-gw") {
        assert_eq!(caps.add, vec!["NET_ADMIN"]);
        assert!(
            pod.host_network,
            "host-gw routes go into the node's namespace"
        );
    } else {
        assert!(caps.add.is_empty());
    }
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.run_as_user, Some(0));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
}

/// The Containerfile puts the script, the template and the binaries where
/// the script and the manifest expect them.
#[test]
fn containerfile_matches_the_script_defaults() {
    let file = read("deploy/Containerfile");
    let copies: Vec<(&str, &str)> = file
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            (parts[parts.len() - 2], parts[parts.len() - 1])
        })
        .collect();
    assert!(
        copies.contains(&("deploy/install-cni.sh", "/install-cni.sh")),
        "{copies:?}"
    );
    assert!(
        copies.contains(&(
            "deploy/10-cni-rs.conflist.template",
            script_default("CONFLIST_TEMPLATE").as_str()
        )),
        "{copies:?}"
    );
    let bin = format!("{}/", script_default("SRC_BIN_DIR"));
    assert!(copies.iter().any(|(_, dst)| *dst == bin), "{copies:?}");
    // Every binary is both built (`-p <crate>`) and copied out of the
    // build stage (`for b in ...`).
    let copied: Vec<&str> = file
        .lines()
        .find_map(|l| l.trim().strip_prefix("&& for b in "))
        .and_then(|l| l.split(';').next())
        .expect("the loop copying the binaries")
        .split_whitespace()
        .collect();
    for (binary, package) in integration::PLUGINS
        .iter()
        .map(|p| (*p, *p))
        .chain([("cnictl", "runtime")])
    {
        assert!(copied.contains(&binary), "{binary} not copied: {copied:?}");
        assert!(
            file.contains(&format!("-p {package} ")),
            "{package} not built"
        );
    }
    assert!(file.contains("ENTRYPOINT [\"/install-cni.sh\"]"));
    for source in copies
        .iter()
        .map(|(s, _)| *s)
        .filter(|s| !s.starts_with('/'))
    {
        assert!(repo().join(source).exists(), "COPY source {source} missing");
    }
    let mode = std::fs::metadata(script()).unwrap().permissions().mode();
    assert_eq!(mode & 0o111, 0o111, "install-cni.sh is not executable");

    // The template is a conflist with a host-local IPAM to fill in.
    let template: Value =
        serde_json::from_str(&read("deploy/10-cni-rs.conflist.template")).unwrap();
    assert!(
        template["plugins"]
            .as_array()
            .is_some_and(|p| { p.iter().any(|pl| pl["ipam"]["type"] == "host-local") })
    );
}

/// A NodeList as the API server returns it; `nodes` are (name, podCIDRs,
/// InternalIPs).
fn node_list(nodes: &[(&str, &[&str], &[&str])]) -> Value {
    let items: Vec<Value> = nodes
        .iter()
        .map(|(name, cidrs, ips)| {
            let mut spec = json!({});
            if let Some(first) = cidrs.first() {
                spec = json!({ "podCIDR": first, "podCIDRs": cidrs });
            }
            let addresses: Vec<Value> = std::iter::once(json!({ "type": "Hostname", "address": name }))
                .chain(ips.iter().map(|ip| json!({ "type": "InternalIP", "address": ip })))
                .collect();
            json!({ "metadata": { "name": name }, "spec": spec, "status": { "addresses": addresses } })
        })
        .collect();
    json!({ "apiVersion": "v1", "kind": "NodeList", "items": items })
}

/// Routes with the installer's protocol number, `DST via GW` per line.
fn host_gw_routes(ns: &Netns) -> Vec<String> {
    let mut v = Vec::new();
    for family in ["-4", "-6"] {
        for r in ns
            .ip_json(&[family, "route", "show", "proto", "201"])
            .as_array()
            .unwrap()
        {
            v.push(format!(
                "{} via {}",
                r["dst"].as_str().unwrap(),
                r["gateway"].as_str().unwrap()
            ));
        }
    }
    v.sort();
    v
}

/// NODE_ROUTES=host-gw: one route per other node's pod CIDR via its
/// InternalIP of the same family — what tests/tests/multinode.rs sets by
/// hand — and a later sync follows the node list, leaving other routes
/// alone.
#[test]
fn host_gw_routes_follow_the_node_list() {
    if !integration::can_run() || !have_curl() {
        return;
    }
    let host = Netns::new("cnit-hostgw");
    host.run_ok(
        "ip",
        &[
            "link", "add", "wire0", "type", "veth", "peer", "name", "wire1",
        ],
    );
    host.run_ok("ip", &["addr", "add", "10.201.0.1/24", "dev", "wire0"]);
    host.run_ok(
        "ip",
        &["addr", "add", "fd00:201::1/64", "dev", "wire0", "nodad"],
    );
    for l in ["wire0", "wire1"] {
        host.run_ok("ip", &["link", "set", l, "up"]);
    }
    // Somebody else's route: never touched.
    host.run_ok("ip", &["route", "add", "10.99.0.0/24", "via", "10.201.0.9"]);

    let node = Node::new(&["loopback"]);
    let tmp = integration::temp_dir("cnit-sa");
    let sa = service_account(tmp.path());
    let self_node = json!({ "kind": "Node", "metadata": { "name": "node-a" }, "spec": { "podCIDRs": ["10.201.1.0/24"] } });
    let sync = |nodes: Value| {
        let api = FakeApiServer::start_routes(
            &host,
            vec![
                ("/api/v1/nodes/node-a", self_node.clone()),
                ("/api/v1/nodes", nodes),
            ],
        );
        let out = node
            .command_in(
                Some(&host),
                &[
                    ("NODE_NAME", "node-a"),
                    ("NODE_ROUTES", "host-gw"),
                    ("K8S_API", &api.url),
                    ("SA_DIR", sa.to_str().unwrap()),
                ],
            )
            .output()
            .unwrap();
        let requests: Vec<String> = api
            .requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.0.clone())
            .collect();
        assert!(
            requests.contains(&"GET /api/v1/nodes HTTP/1.1".to_string()),
            "{requests:?}"
        );
        (
            ok(out.clone()),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (log, warnings) = sync(node_list(&[
        ("node-a", &["10.201.1.0/24"], &["10.201.0.1"]),
        (
            "node-b",
            &["10.201.2.0/24", "fd00:201:2::/64"],
            &["10.201.0.2", "fd00:201::2"],
        ),
        ("node-c", &["10.201.3.0/24"], &["10.201.0.3"]),
        ("node-d", &[], &["10.201.0.4"]),
        ("node-e", &["10.201.5.0/24"], &[]),
        ("node-f", &["10.201.6.0/24"], &["192.0.2.77"]),
    ]));
    assert_eq!(
        host_gw_routes(&host),
        vec![
            "10.201.2.0/24 via 10.201.0.2",
            "10.201.3.0/24 via 10.201.0.3",
            "fd00:201:2::/64 via fd00:201::2",
        ],
        "{log}"
    );
    // A node that is not on this network is reported, not fatal.
    assert!(
        warnings.contains("cannot route 10.201.6.0/24 via 192.0.2.77"),
        "{warnings}"
    );
    assert_eq!(
        host_local_ipam(&node.conflist())["ranges"],
        json!([[{ "subnet": "10.201.1.0/24" }]])
    );

    // node-b left the cluster, node-c got a new address.
    let (log, _) = sync(node_list(&[
        ("node-a", &["10.201.1.0/24"], &["10.201.0.1"]),
        ("node-c", &["10.201.3.0/24"], &["10.201.0.33"]),
    ]));
    assert_eq!(
        host_gw_routes(&host),
        vec!["10.201.3.0/24 via 10.201.0.33"],
        "{log}"
    );
    assert!(log.contains("removed stale route 10.201.2.0/24"), "{log}");
    assert!(log.contains("removed stale route fd00:201:2::/64"), "{log}");
    assert!(
        host.run_ok("ip", &["route", "show", "10.99.0.0/24"])
            .contains("via 10.201.0.9"),
        "another route was touched"
    );

    // Nothing changed: nothing logged.
    let (log, _) = sync(node_list(&[
        ("node-a", &["10.201.1.0/24"], &["10.201.0.1"]),
        ("node-c", &["10.201.3.0/24"], &["10.201.0.33"]),
    ]));
    assert!(!log.contains("route"), "{log}");
}
