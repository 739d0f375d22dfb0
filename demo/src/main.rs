//! `cni-demo`: the project's main job on its bundled default configuration.
//!
//! Two throwaway containers are attached to the default network (bridge with
//! gateway and masquerade, host-local, portmap) and to the loopback network,
//! through the runtime crate — the same code path as `cnictl`. The demo shows
//! what was created, proves that it works (container to container, a hostPort
//! reached from the host's 127.0.0.1 and from the other container), DELs
//! everything and shows that nothing is left.
//!
//! The "host" is a throwaway namespace too, so the machine's own interfaces,
//! routes and netfilter rules are never touched, and host-local's state and
//! the result cache live in a temporary directory. Traffic stays on loopback
//! and inside the namespaces the demo created. Ctrl-C or a failure at any
//! point still removes everything.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use netns::{NetNs, TempNetns};
use runtime::{Attachment, NetworkConfigList, ResultCache, Runtime};
use serde_json::{Value, json};

const DEFAULT_CONFLIST: &str = include_str!("../../conf/10-cni-rs.conflist");
const LOOPBACK_CONFLIST: &str = include_str!("../../conf/99-loopback.conflist");
const HOST_PORT: u16 = 8080;
const CONTAINER_PORT: u16 = 80;
const PLUGINS: &[&str] = &["bridge", "host-local", "portmap", "loopback"];

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: nix::libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

type Fallible<T> = Result<T, String>;

fn step(msg: &str) -> Fallible<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err("interrupted".into());
    }
    println!("==> {msg}");
    Ok(())
}

fn detail(text: &str) {
    for line in text.lines() {
        println!("    {line}");
    }
}

struct Options {
    cni_path: Vec<PathBuf>,
}

fn parse_args() -> Fallible<Options> {
    let mut cni_path = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--cni-path" => cni_path = args.next(),
            "-h" | "--help" => {
                println!(
                    "usage: cni-demo [--cni-path DIRS]\n\n\
                     Runs the bundled default network on two throwaway containers.\n\
                     DIRS: where the plugins are (default: next to this binary, or $CNI_PATH)."
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    let dirs = cni_path
        .or_else(|| std::env::var("CNI_PATH").ok())
        .map(|p| {
            p.split(':')
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|e| e.parent().map(Path::to_path_buf))
                .into_iter()
                .collect()
        });
    Ok(Options { cni_path: dirs })
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

fn preflight(opts: &Options) -> Fallible<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(
            "the demo needs root (it creates network namespaces): run `sudo make demo`".into(),
        );
    }
    let mut missing = Vec::new();
    if !on_path("ip") {
        missing.push("ip (apt-get install iproute2)");
    }
    if !on_path("iptables-restore") && !on_path("nft") {
        missing.push("iptables or nft (apt-get install iptables nftables)");
    }
    if !missing.is_empty() {
        return Err(format!("missing tools: {}", missing.join(", ")));
    }
    for p in PLUGINS {
        if !opts.cni_path.iter().any(|d| d.join(p).is_file()) {
            return Err(format!(
                "plugin {p:?} not found in {:?}: build with `make build` or pass --cni-path",
                opts.cni_path
            ));
        }
    }
    Ok(())
}

/// Run a display command inside a namespace and return its output.
fn show(ns: &NetNs, program: &str, args: &[&str]) -> String {
    match test_support::command_in(ns, program).args(args).output() {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => format!("({program}: {e})"),
    }
}

fn ns_run<T: Send>(ns: &NetNs, f: impl FnOnce() -> T + Send) -> Fallible<T> {
    ns.run(f).map_err(|e| e.to_string())
}

/// A tiny HTTP server whose listening socket lives in the container's
/// namespace; it is served from a thread of ours.
fn start_http_server(ns: &NetNs, name: &'static str) -> Fallible<()> {
    let listener = ns_run(ns, || {
        TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, CONTAINER_PORT)))
    })?
    .map_err(|e| format!("listen on :{CONTAINER_PORT} in {name}: {e}"))?;
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let peer = conn
                .peer_addr()
                .map(|p| p.ip().to_string())
                .unwrap_or_default();
            let body = format!("hello from {name} (you came from {peer})\n");
            let _ = write!(
                conn,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok(())
}

/// GET / from inside `ns`; returns the body.
fn http_get(ns: &NetNs, addr: SocketAddr) -> Fallible<String> {
    let stream = ns_run(ns, || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(3))
    })?
    .map_err(|e| format!("connect to {addr}: {e}"))?;
    let mut stream = stream;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
    write!(stream, "GET / HTTP/1.0\r\n\r\n").map_err(|e| format!("send to {addr}: {e}"))?;
    let mut resp = String::new();
    stream
        .read_to_string(&mut resp)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let body = resp
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string();
    if !resp.starts_with("HTTP/1.0 200") {
        return Err(format!("unexpected answer from {addr}: {resp:?}"));
    }
    Ok(body)
}

fn ping(ns: &NetNs, addr: &str) -> Fallible<String> {
    if !on_path("ping") {
        return Ok("(ping not installed: apt-get install iputils-ping; skipped)".into());
    }
    let out = show(ns, "ping", &["-c", "2", "-i", "0.2", "-W", "2", addr]);
    let summary = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or("")
        .to_string();
    if summary.contains(" 0% packet loss") {
        Ok(summary)
    } else {
        Err(format!("ping {addr} failed: {out}"))
    }
}

fn container_ip(result: &Value) -> Fallible<String> {
    result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .map(str::to_string)
        .ok_or_else(|| format!("no address in result {result}"))
}

/// Everything the demo created, torn down in reverse on drop.
struct Demo {
    runtime: Runtime,
    networks: Vec<NetworkConfigList>,
    attached: Vec<(usize, Attachment)>,
    _state: tempfile::TempDir,
    // Dropped last: the namespaces.
    containers: Vec<TempNetns>,
    host: TempNetns,
}

impl Demo {
    fn detach_all(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        while let Some((net, att)) = self.attached.pop() {
            if let Err(e) = self.runtime.del(&self.networks[net], &att) {
                errors.push(e.to_string());
            }
        }
        errors
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if !self.attached.is_empty() {
            println!("==> cleaning up");
            for e in self.detach_all() {
                eprintln!("    cleanup: {e}");
            }
        }
        for c in &self.containers {
            let _ = netns::remove_path(c.path());
        }
        let _ = netns::remove_path(self.host.path());
    }
}

fn network(text: &str, data_dir: &Path) -> Fallible<NetworkConfigList> {
    let mut v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    // Keep host-local's reservations out of /var/lib/cni.
    if let Some(plugins) = v["plugins"].as_array_mut() {
        for p in plugins {
            if p.get("ipam").is_some_and(Value::is_object) {
                p["ipam"]["dataDir"] = json!(data_dir.display().to_string());
            }
        }
    }
    let bytes = serde_json::to_vec(&v).map_err(|e| e.to_string())?;
    NetworkConfigList::from_bytes(&bytes, "bundled conflist").map_err(|e| e.to_string())
}

fn run(opts: Options) -> Fallible<()> {
    step("creating a throwaway host namespace and two container namespaces")?;
    let host = TempNetns::new("cni-demo-host").map_err(|e| e.to_string())?;
    let containers = vec![
        TempNetns::new("cni-demo-a").map_err(|e| e.to_string())?,
        TempNetns::new("cni-demo-b").map_err(|e| e.to_string())?,
    ];
    let host_ns = host.open().map_err(|e| e.to_string())?;
    show(&host_ns, "ip", &["link", "set", "lo", "up"]);
    detail(&format!(
        "host: {}\ncontainer a: {}\ncontainer b: {}",
        host.path().display(),
        containers[0].path().display(),
        containers[1].path().display()
    ));
    // From here on this thread — and every plugin it execs — lives in the
    // demo's host namespace, as a runtime on a real node would.
    nix::sched::setns(&host_ns, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("enter the demo host namespace: {e}"))?;

    let state = tempfile::Builder::new()
        .prefix("cni-demo-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let data_dir = state.path().join("networks");
    let networks = vec![
        network(DEFAULT_CONFLIST, &data_dir)?,
        network(LOOPBACK_CONFLIST, &data_dir)?,
    ];
    let runtime = Runtime::new(opts.cni_path.clone())
        .with_cache(ResultCache::new(state.path().join("cache")));
    let mut demo = Demo {
        runtime,
        networks,
        attached: Vec::new(),
        _state: state,
        containers,
        host,
    };

    let a_ns = demo.containers[0].open().map_err(|e| e.to_string())?;
    let b_ns = demo.containers[1].open().map_err(|e| e.to_string())?;
    let mut results = Vec::new();
    for (i, label) in ["a", "b"].iter().enumerate() {
        let path = demo.containers[i].path().display().to_string();
        let id = format!("cni-demo-{label}");
        step(&format!(
            "ADD container {label} to network \"cni-loopback\" (lo)"
        ))?;
        let lo = Attachment::new(&id, &path, "lo");
        demo.runtime
            .add(&demo.networks[1], &lo)
            .map_err(|e| e.to_string())?;
        demo.attached.push((1, lo));
        let mut att = Attachment::new(&id, &path, "eth0");
        let mut mappings = None;
        if i == 0 {
            let m = json!([{"hostPort": HOST_PORT, "containerPort": CONTAINER_PORT, "protocol": "tcp"}]);
            att.capability_args.insert("portMappings".into(), m.clone());
            mappings = Some(m);
        }
        step(&format!(
            "ADD container {label} to network \"{}\" (bridge + host-local + portmap)",
            demo.networks[0].name
        ))?;
        let result = demo
            .runtime
            .add(&demo.networks[0], &att)
            .map_err(|e| e.to_string())?;
        demo.attached.push((0, att));
        match runtime::report::result_summary(&result, mappings.as_ref()) {
            Ok(s) => detail(&s),
            Err(e) => detail(&e),
        }
        results.push(result);
    }
    let a_ip = container_ip(&results[0])?;
    let b_ip = container_ip(&results[1])?;
    let gateway = results[0]["ips"][0]["gateway"]
        .as_str()
        .unwrap_or("10.89.0.1")
        .to_string();

    step("on the host: the bridge, the container ports, the routes")?;
    detail(&show(&host_ns, "ip", &["-br", "link", "show"]));
    detail(&show(
        &host_ns,
        "ip",
        &["-br", "addr", "show", "dev", "cni-rs0"],
    ));
    detail(&show(&host_ns, "ip", &["route", "show"]));
    step("on the host: the port mapping and masquerade rules")?;
    let rules = netfilter(&host_ns);
    detail(if rules.trim().is_empty() {
        "(none)"
    } else {
        &rules
    });
    step("inside container a")?;
    detail(&show(&a_ns, "ip", &["-br", "addr", "show"]));
    detail(&show(&a_ns, "ip", &["route", "show"]));

    step(&format!("container b pings container a ({a_ip})"))?;
    detail(&ping(&b_ns, &a_ip)?);
    step(&format!("container a pings container b ({b_ip})"))?;
    detail(&ping(&a_ns, &b_ip)?);
    step(&format!("container a pings its gateway ({gateway})"))?;
    detail(&ping(&a_ns, &gateway)?);

    step(&format!(
        "starting an HTTP server in container a on :{CONTAINER_PORT}"
    ))?;
    start_http_server(&a_ns, "container a")?;
    let a_addr: Ipv4Addr = a_ip.parse().map_err(|e| format!("{a_ip}: {e}"))?;
    let gw_addr: Ipv4Addr = gateway.parse().map_err(|e| format!("{gateway}: {e}"))?;
    step(&format!(
        "host -> 127.0.0.1:{HOST_PORT} (hostPort, DNAT to {a_ip}:{CONTAINER_PORT})"
    ))?;
    detail(&http_get(
        &host_ns,
        SocketAddr::from((Ipv4Addr::LOCALHOST, HOST_PORT)),
    )?);
    step(&format!(
        "container b -> {gateway}:{HOST_PORT} (the hostPort via the host's address)"
    ))?;
    detail(&http_get(&b_ns, SocketAddr::from((gw_addr, HOST_PORT)))?);
    step(&format!(
        "container b -> {a_ip}:{CONTAINER_PORT} (directly, across the bridge)"
    ))?;
    detail(&http_get(
        &b_ns,
        SocketAddr::from((a_addr, CONTAINER_PORT)),
    )?);

    step("DEL both containers from both networks")?;
    let errors = demo.detach_all();
    if !errors.is_empty() {
        return Err(format!("DEL failed: {}", errors.join("; ")));
    }
    step("what is left")?;
    let veths: Vec<String> = show(&host_ns, "ip", &["-br", "link", "show", "type", "veth"])
        .lines()
        .map(str::to_string)
        .collect();
    detail(&format!("container veths on the host: {}", veths.len()));
    let reservations = std::fs::read_dir(data_dir.join("cni-rs"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n != "lock" && !n.starts_with("last_reserved_ip")
                })
                .count()
        })
        .unwrap_or(0);
    detail(&format!("host-local reservations: {reservations}"));
    let left = netfilter(&host_ns);
    let per_container = left
        .lines()
        .filter(|l| {
            l.contains("cni-demo-")
                || l.contains("CNI-DN-")
                || (l.starts_with(":CNI-") && !l.contains("HOSTPORT"))
        })
        .count();
    detail(&format!(
        "per-container netfilter rules and chains: {per_container}"
    ));
    detail(
        "(the bridge and the shared CNI-HOSTPORT-* chains stay, as with the reference; the host namespace goes now)",
    );
    if !veths.is_empty() || reservations != 0 || per_container != 0 {
        return Err("something was left behind".into());
    }
    drop(demo);
    step("done: every namespace, link, rule and file the demo made is gone")?;
    Ok(())
}

fn netfilter(ns: &NetNs) -> String {
    let mut out = String::new();
    for line in show(ns, "iptables-save", &["-t", "nat"]).lines() {
        if line.contains("CNI") {
            out.push_str(line);
            out.push('\n');
        }
    }
    for table in [["ip", "cni_hostport"], ["inet", "cni_plugins_masquerade"]] {
        let t = show(ns, "nft", &["list", "table", table[0], table[1]]);
        out.push_str(&t);
    }
    out
}

fn main() {
    let handler = nix::sys::signal::SigHandler::Handler(on_signal);
    for sig in [nix::sys::signal::SIGINT, nix::sys::signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        let _ = unsafe { nix::sys::signal::signal(sig, handler) };
    }
    let code = match parse_args()
        .and_then(|o| preflight(&o).map(|()| o))
        .and_then(run)
    {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("cni-demo: {e}");
            if INTERRUPTED.load(Ordering::SeqCst) {
                130
            } else {
                1
            }
        }
    };
    std::process::exit(code)
}
