//! Command line and environment of `cnictl`. Every option has the
//! environment variable cnitool reads for it, so the two tools can be
//! swapped in scripts; a flag wins over its variable.

use std::path::PathBuf;
use std::time::Duration;

pub const USAGE: &str = "\
usage: cnictl [options] add|check|del NETWORK [NETNS]
       cnictl [options] gc|status NETWORK
       cnictl [options] list

Runs the CNI plugin chain of network configuration NETWORK for the container
whose network namespace is NETNS, like libcni's cnitool.

options (environment variable, default):
  --conf-dir DIR        configuration directory (NETCONFPATH, /etc/cni/net.d)
  --cni-path DIRS       ':'-separated plugin directories (CNI_PATH, /opt/cni/bin)
  -i, --ifname NAME     interface name in the container (CNI_IFNAME, eth0)
  --args K=V;K2=V2      CNI_ARGS passed to the plugins (CNI_ARGS)
  --cap-args JSON       capability arguments, e.g. '{\"portMappings\":[...]}' (CAP_ARGS)
  --container-id ID     container id (default: derived from NETNS exactly as cnitool does)
  --cache-dir DIR       result cache directory (CNI_CACHE_DIR, /var/lib/cni)
  --timeout SECONDS     per-plugin time limit, 0 for none (60)
  --json                print raw JSON (the CNI result for add) instead of a summary
  --no-cleanup          add: leave a failed ADD as it is instead of running DEL
  --valid ID/IFNAME     gc: an attachment to keep (repeatable)
  --keep-cached         gc: keep every attachment in the result cache
  -h, --help            this text
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Check,
    Del,
    Gc,
    Status,
    List,
}

#[derive(Debug)]
pub struct Options {
    pub command: Command,
    pub network: String,
    pub netns: Option<PathBuf>,
    pub conf_dir: PathBuf,
    pub cni_path: Vec<PathBuf>,
    pub ifname: String,
    pub args: String,
    pub cap_args: String,
    pub container_id: Option<String>,
    pub cache_dir: PathBuf,
    pub timeout: Option<Duration>,
    pub json: bool,
    pub no_cleanup: bool,
    pub valid: Vec<String>,
    pub keep_cached: bool,
}

/// `Ok(None)` means help was asked for.
pub fn parse(
    argv: &[String],
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Options>, String> {
    let env = |name: &str| env(name).filter(|v| !v.is_empty());
    let Some(mut flags) = Flags::read(argv)? else {
        return Ok(None);
    };
    let words = Words::check(
        std::mem::take(&mut flags.positional),
        flags.container_id.is_some(),
    )?;
    let timeout = parse_timeout(flags.timeout.as_deref())?;
    Ok(Some(flags.resolve(words, timeout, env)))
}

/// The options as given on the command line, before the environment and
/// the defaults fill the gaps.
#[derive(Default)]
struct Flags {
    conf_dir: Option<String>,
    cni_path: Option<String>,
    ifname: Option<String>,
    args: Option<String>,
    cap_args: Option<String>,
    container_id: Option<String>,
    cache_dir: Option<String>,
    timeout: Option<String>,
    json: bool,
    no_cleanup: bool,
    keep_cached: bool,
    valid: Vec<String>,
    positional: Vec<String>,
}

impl Flags {
    /// `--flag value`, `--flag=value`, `--` ends the options; `Ok(None)`
    /// for help.
    fn read(argv: &[String]) -> Result<Option<Flags>, String> {
        let mut flags = Flags::default();
        let mut it = argv.iter();
        while let Some(arg) = it.next() {
            if arg == "--" {
                flags.positional.extend(it.by_ref().cloned());
                break;
            }
            if !arg.starts_with('-') || arg == "-" {
                flags.positional.push(arg.clone());
                continue;
            }
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
                _ => (arg.as_str(), None),
            };
            let mut value = |name: &str| -> Result<String, String> {
                match &inline {
                    Some(v) => Ok(v.clone()),
                    None => it
                        .next()
                        .cloned()
                        .ok_or_else(|| format!("option {name} needs a value")),
                }
            };
            match flag {
                "-h" | "--help" => return Ok(None),
                "--conf-dir" => flags.conf_dir = Some(value(flag)?),
                "--cni-path" => flags.cni_path = Some(value(flag)?),
                "-i" | "--ifname" => flags.ifname = Some(value(flag)?),
                "--args" => flags.args = Some(value(flag)?),
                "--cap-args" => flags.cap_args = Some(value(flag)?),
                "--container-id" => flags.container_id = Some(value(flag)?),
                "--cache-dir" => flags.cache_dir = Some(value(flag)?),
                "--timeout" => flags.timeout = Some(value(flag)?),
                "--valid" => flags.valid.push(value(flag)?),
                "--json" => flags.json = true,
                "--no-cleanup" => flags.no_cleanup = true,
                "--keep-cached" => flags.keep_cached = true,
                _ => return Err(format!("unknown option {arg}")),
            }
            if inline.is_some() && matches!(flag, "--json" | "--no-cleanup" | "--keep-cached") {
                return Err(format!("option {flag} takes no value"));
            }
        }
        Ok(Some(flags))
    }

    /// Flag, else environment variable, else default.
    fn resolve(
        self,
        words: Words,
        timeout: Option<Duration>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Options {
        let cni_path = self
            .cni_path
            .or_else(|| env("CNI_PATH"))
            .unwrap_or_else(|| "/opt/cni/bin".to_string());
        Options {
            command: words.command,
            network: words.network,
            netns: words.netns,
            conf_dir: self
                .conf_dir
                .or_else(|| env("NETCONFPATH"))
                .unwrap_or_else(|| "/etc/cni/net.d".to_string())
                .into(),
            cni_path: cni_path
                .split(':')
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .collect(),
            ifname: self
                .ifname
                .or_else(|| env("CNI_IFNAME"))
                .unwrap_or_else(|| "eth0".to_string()),
            args: self.args.or_else(|| env("CNI_ARGS")).unwrap_or_default(),
            cap_args: self
                .cap_args
                .or_else(|| env("CAP_ARGS"))
                .unwrap_or_default(),
            container_id: self.container_id,
            cache_dir: self
                .cache_dir
                .or_else(|| env("CNI_CACHE_DIR"))
                .unwrap_or_else(|| runtime::cache::DEFAULT_CACHE_DIR.to_string())
                .into(),
            timeout,
            json: self.json,
            no_cleanup: self.no_cleanup,
            valid: self.valid,
            keep_cached: self.keep_cached,
        }
    }
}

/// The positional words: command, network, netns.
struct Words {
    command: Command,
    network: String,
    netns: Option<PathBuf>,
}

impl Words {
    /// The command and what it needs to run (a DEL can do with a container
    /// id instead of a netns).
    fn check(words: Vec<String>, has_container_id: bool) -> Result<Words, String> {
        let mut words = words.into_iter();
        let command = match words.next().as_deref() {
            Some("add") => Command::Add,
            Some("check") => Command::Check,
            Some("del") => Command::Del,
            Some("gc") => Command::Gc,
            Some("status") => Command::Status,
            Some("list") => Command::List,
            Some(other) => return Err(format!("unknown command {other:?}")),
            None => return Err("missing command".to_string()),
        };
        let network = words.next().unwrap_or_default();
        let netns = words.next().map(PathBuf::from);
        if let Some(extra) = words.next() {
            return Err(format!("unexpected argument {extra:?}"));
        }
        if command != Command::List && network.is_empty() {
            return Err("missing network name".to_string());
        }
        if command == Command::List && !network.is_empty() {
            return Err(format!("list takes no arguments, got {network:?}"));
        }
        if matches!(command, Command::Add | Command::Check) && netns.is_none() {
            return Err("missing network namespace path".to_string());
        }
        if matches!(command, Command::Del) && netns.is_none() && !has_container_id {
            return Err("del needs a network namespace path or --container-id".to_string());
        }
        Ok(Words {
            command,
            network,
            netns,
        })
    }
}

/// `--timeout SECONDS`: absent is the default, 0 is none.
fn parse_timeout(text: Option<&str>) -> Result<Option<Duration>, String> {
    let Some(text) = text else {
        return Ok(Some(runtime::DEFAULT_TIMEOUT));
    };
    let secs: f64 = text
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| format!("invalid --timeout {text:?}"))?;
    Ok((secs > 0.0).then(|| Duration::from_secs_f64(secs)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(args: &[&str], env: &[(&str, &str)]) -> Result<Option<Options>, String> {
        let argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse(&argv, |name| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn flags_win_over_environment_and_defaults_apply() {
        let o = parse_with(
            &["--ifname=net1", "add", "mynet", "/run/netns/x", "--json"],
            &[
                ("CNI_IFNAME", "eth9"),
                ("CNI_PATH", "/a:/b"),
                ("NETCONFPATH", "/c"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(o.command, Command::Add);
        assert_eq!(o.network, "mynet");
        assert_eq!(o.ifname, "net1");
        assert_eq!(o.cni_path, [PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(o.conf_dir, PathBuf::from("/c"));
        assert_eq!(o.cache_dir, PathBuf::from("/var/lib/cni"));
        assert!(o.json);

        let o = parse_with(&["status", "n"], &[]).unwrap().unwrap();
        assert_eq!(o.ifname, "eth0");
        assert_eq!(o.cni_path, [PathBuf::from("/opt/cni/bin")]);
        assert_eq!(o.timeout, Some(runtime::DEFAULT_TIMEOUT));
    }

    #[test]
    fn rejects_what_cannot_run() {
        assert!(parse_with(&["add", "n"], &[]).is_err());
        assert!(parse_with(&["del", "n"], &[]).is_err());
        assert!(parse_with(&["del", "n", "--container-id", "c"], &[]).is_ok());
        assert!(parse_with(&["frob", "n"], &[]).is_err());
        assert!(parse_with(&["--bogus", "list"], &[]).is_err());
        assert!(parse_with(&["list", "extra"], &[]).is_err());
        assert!(parse_with(&["--timeout", "-1", "list"], &[]).is_err());
        assert!(parse_with(&["--help"], &[]).unwrap().is_none());
    }
}
