//! `cnictl`: run a CNI network's plugin chain for a container, like libcni's
//! `cnitool`, and interchangeable with it (same environment, same container
//! id, same result cache).

mod cli;
use runtime::report;

use std::process::ExitCode;

use serde_json::{Map, Value};

use cli::{Command, Options};
use runtime::attachment::{cnitool_container_id, parse_cni_args};
use runtime::{
    Attachment, CheckOutcome, Error, GcAttachment, NetworkConfigList, PluginFailure, ResultCache,
    Runtime, StatusOutcome, Verb, config_dir,
};

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let options = match cli::parse(&argv, |name| std::env::var(name).ok()) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("cnictl: {message}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("cnictl: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(options: &Options) -> Result<(), String> {
    if options.command == Command::List {
        return list(options);
    }
    let network =
        config_dir::find(&options.conf_dir, &options.network).map_err(|e| e.to_string())?;
    let runtime = Runtime::new(options.cni_path.clone())
        .with_cache(ResultCache::new(&options.cache_dir))
        .with_timeout(options.timeout)
        .with_forwarded_stderr(true);
    match options.command {
        Command::Add => add(options, &runtime, &network),
        Command::Check => {
            let attachment = attachment(options)?;
            match runtime
                .check(&network, &attachment)
                .map_err(|e| e.to_string())?
            {
                CheckOutcome::Checked if !options.json => println!(
                    "network {:?}: container {} interface {}: CHECK passed",
                    network.name, attachment.container_id, attachment.ifname
                ),
                CheckOutcome::Disabled if !options.json => println!(
                    "network {:?}: CHECK skipped (disableCheck is set)",
                    network.name
                ),
                _ => {}
            }
            Ok(())
        }
        Command::Del => {
            let attachment = attachment(options)?;
            runtime
                .del(&network, &attachment)
                .map_err(|e| e.to_string())?;
            if !options.json {
                println!(
                    "network {:?}: container {} interface {}: deleted",
                    network.name, attachment.container_id, attachment.ifname
                );
            }
            Ok(())
        }
        Command::Gc => gc(options, &runtime, &network),
        Command::Status => {
            let outcome = runtime.status(&network).map_err(|e| e.to_string())?;
            let ready = match &outcome {
                StatusOutcome::Ready => {
                    format!("network {:?}: ready", network.name)
                }
                StatusOutcome::NotSupported { cni_version } => format!(
                    "network {:?}: cniVersion {cni_version:?} predates STATUS (1.1.0); no plugin was asked",
                    network.name
                ),
            };
            if options.json {
                let supported = matches!(outcome, StatusOutcome::Ready);
                println!(
                    "{}",
                    serde_json::json!({"ready": true, "statusSupported": supported})
                );
            } else {
                println!("{ready}");
            }
            Ok(())
        }
        // Handled above, before a network is loaded.
        Command::List => Ok(()),
    }
}

/// The attachment named by the command line: container id (given, or
/// cnitool's derivation from the netns path), netns, ifname and arguments.
fn attachment(options: &Options) -> Result<Attachment, String> {
    let netns = match &options.netns {
        Some(path) => runtime::attachment::absolute_path(path)
            .map_err(|e| format!("resolve {}: {e}", path.display()))?
            .display()
            .to_string(),
        None => String::new(),
    };
    let container_id = match (&options.container_id, &options.netns) {
        (Some(id), _) => id.clone(),
        (None, Some(path)) => {
            cnitool_container_id(path).map_err(|e| format!("resolve {}: {e}", path.display()))?
        }
        (None, None) => return Err("a container id or a netns path is needed".to_string()),
    };
    let mut attachment = Attachment::new(&container_id, &netns, &options.ifname);
    attachment.args = parse_cni_args(&options.args).map_err(|e| e.to_string())?;
    if !options.cap_args.is_empty() {
        attachment.capability_args = match serde_json::from_str::<Value>(&options.cap_args) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err("CAP_ARGS is not a JSON object".to_string()),
            Err(e) => return Err(format!("CAP_ARGS is not valid JSON: {e}")),
        };
    }
    Ok(attachment)
}

fn add(options: &Options, runtime: &Runtime, network: &NetworkConfigList) -> Result<(), String> {
    let attachment = attachment(options)?;
    // A second ADD for the same attachment would fail in the plugins, and
    // the cleanup DEL below would then tear down the first one.
    if runtime
        .cache()
        .load(&network.name, &attachment.container_id, &attachment.ifname)
        .map_err(|e| e.to_string())?
        .is_some()
    {
        return Err(format!(
            "network {:?}: container {} interface {} is already added; run del first",
            network.name, attachment.container_id, attachment.ifname
        ));
    }
    let result = match runtime.add(network, &attachment) {
        Ok(result) => result,
        Err(add_error) => {
            // Nothing to undo when no plugin ran ADD (bad arguments, a
            // VERSION failure); otherwise some plugins may have done their
            // part, and even the failing one may have half of it.
            let first = network.plugins.first().map(|p| p.plugin_type.as_str());
            let chain_ran = match &add_error {
                Error::Plugin(p) => {
                    let this_one_ran = !matches!(
                        p.failure,
                        PluginFailure::NotFound { .. }
                            | PluginFailure::InvalidType(_)
                            | PluginFailure::Spawn { .. }
                    );
                    p.verb == Verb::Add && (this_one_ran || Some(p.plugin.as_str()) != first)
                }
                Error::Cache { .. } => true,
                _ => false,
            };
            if options.no_cleanup || !chain_ran {
                return Err(add_error.to_string());
            }
            // What a runtime must do after a failed ADD: DEL, so plugins that
            // did succeed release what they took.
            return Err(match runtime.del(network, &attachment) {
                Ok(()) => format!("{add_error} (the chain was deleted again)"),
                Err(del_error) => {
                    format!("{add_error}; the cleanup DEL also failed: {del_error}")
                }
            });
        }
    };
    if options.json {
        println!("{}", pretty(&result));
        return Ok(());
    }
    let cni_version = result
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or("?");
    println!(
        "network {:?} (CNI {cni_version}): container {} interface {} added",
        network.name, attachment.container_id, attachment.ifname
    );
    let port_mappings = network
        .plugins
        .iter()
        .any(|p| p.capabilities().any(|c| c == "portMappings"))
        .then(|| attachment.capability_args.get("portMappings"))
        .flatten();
    match report::result_summary(&result, port_mappings) {
        Ok(text) => print!("{text}"),
        // The ADD succeeded; an odd result shape only costs the summary.
        Err(message) => println!("{message}\n{}", pretty(&result)),
    }
    Ok(())
}

fn gc(options: &Options, runtime: &Runtime, network: &NetworkConfigList) -> Result<(), String> {
    let mut valid = Vec::new();
    for item in &options.valid {
        let (container_id, ifname) = item
            .split_once('/')
            .filter(|(c, i)| !c.is_empty() && !i.is_empty())
            .ok_or_else(|| format!("--valid {item:?}: expected CONTAINER_ID/IFNAME"))?;
        valid.push(GcAttachment {
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
        });
    }
    if options.keep_cached {
        for cached in runtime.cache().list().map_err(|e| e.to_string())? {
            if cached.network == network.name {
                valid.push(GcAttachment {
                    container_id: cached.attachment.container_id,
                    ifname: cached.attachment.ifname,
                });
            }
        }
    }
    // With neither flag, behave as cnitool: every cached attachment is stale.
    let given = !options.valid.is_empty() || options.keep_cached;
    let report = runtime
        .gc(network, given.then_some(valid.as_slice()))
        .map_err(|e: Error| e.to_string())?;
    if options.json {
        let deleted: Vec<Value> = report
            .deleted
            .iter()
            .map(|a| serde_json::to_value(a).unwrap_or(Value::Null))
            .collect();
        let mut out = Map::new();
        out.insert("disabled".into(), report.disabled.into());
        out.insert("deleted".into(), Value::Array(deleted));
        out.insert("pluginsCalled".into(), report.plugins_called.into());
        println!("{}", Value::Object(out));
        return Ok(());
    }
    if report.disabled {
        println!("network {:?}: GC skipped (disableGC is set)", network.name);
        return Ok(());
    }
    for a in &report.deleted {
        println!(
            "network {:?}: deleted stale attachment {}/{}",
            network.name, a.container_id, a.ifname
        );
    }
    if report.plugins_called {
        println!(
            "network {:?}: GC sent to {} plugin(s)",
            network.name,
            network.plugins.len()
        );
    } else {
        println!(
            "network {:?}: cniVersion predates GC (1.1.0); only cached attachments were collected",
            network.name
        );
    }
    Ok(())
}

fn list(options: &Options) -> Result<(), String> {
    let files = config_dir::load_all(&options.conf_dir).map_err(|e| e.to_string())?;
    if options.json {
        let entries: Vec<Value> = files
            .iter()
            .map(|f| match &f.network {
                Ok(n) => serde_json::json!({
                    "file": f.path,
                    "name": n.name,
                    "cniVersion": n.cni_version,
                    "cniVersions": n.cni_versions,
                    "plugins": n.plugins.iter().map(|p| p.plugin_type.clone()).collect::<Vec<_>>(),
                }),
                Err(e) => serde_json::json!({"file": f.path, "error": e.to_string()}),
            })
            .collect();
        println!("{}", pretty(&Value::Array(entries)));
        return Ok(());
    }
    if files.is_empty() {
        println!(
            "no network configurations in {}",
            options.conf_dir.display()
        );
        return Ok(());
    }
    println!("{:<20} {:<12} {:<32} FILE", "NAME", "VERSION", "PLUGINS");
    for file in &files {
        match &file.network {
            Ok(n) => {
                let plugins: Vec<&str> = n.plugins.iter().map(|p| p.plugin_type.as_str()).collect();
                let version = if n.cni_versions.is_empty() {
                    n.cni_version.clone()
                } else {
                    n.declared_versions().join(",")
                };
                println!(
                    "{:<20} {:<12} {:<32} {}",
                    n.name,
                    version,
                    plugins.join(","),
                    file.path.display()
                );
            }
            Err(e) => println!("{:<20} {:<12} {:<32} {}", "(unreadable)", "-", "-", e),
        }
    }
    Ok(())
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}
