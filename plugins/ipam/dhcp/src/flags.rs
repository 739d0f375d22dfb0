//! `dhcp daemon` flags, spelled as the reference's Go flags: `-name value`,
//! `-name=value` or with two dashes; durations in Go syntax (`10s`,
//! `1m30s`, `500ms`).

use std::path::PathBuf;
use std::time::Duration;

use crate::config::DEFAULT_SOCKET_PATH;
use crate::exchange::Timing;

/// Where leases are kept across daemon restarts (ours: `-statedir`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cni/dhcp";

#[derive(Debug, Clone)]
pub struct DaemonFlags {
    pub socket_path: String,
    pub host_prefix: String,
    pub pidfile: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub timing: Timing,
}

impl Default for DaemonFlags {
    fn default() -> Self {
        DaemonFlags {
            socket_path: DEFAULT_SOCKET_PATH.to_string(),
            host_prefix: String::new(),
            pidfile: None,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            timing: Timing {
                timeout: Duration::from_secs(10),
                resend_max: Duration::from_secs(62),
                resend_timeout: Duration::from_secs(208),
                broadcast: false,
            },
        }
    }
}

pub const USAGE: &str = "Usage of daemon:
  -broadcast           broadcast DHCP leases
  -hostprefix string   optional prefix to host root
  -pidfile string      optional path to write daemon PID to
  -resendmax duration  optional dhcp client max resend delay between requests (default 1m2s)
  -resendtimeout duration
                       optional dhcp client resend timeout, no more retries after this timeout (default 3m28s)
  -socketpath string   optional dhcp server socketpath (default /run/cni/dhcp.sock)
  -statedir string     directory where leases are kept across restarts (default /var/lib/cni/dhcp)
  -timeout duration    optional dhcp client timeout duration for each request (default 10s)
";

/// A Go duration: a sequence of decimal numbers with units
/// ns, us, µs, ms, s, m, h (`1h2m`, `1.5s`, `0`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * scale;
    }
    Duration::try_from_secs_f64(total).ok()
}

/// Parse the arguments after `daemon`.
pub fn parse(args: &[String]) -> Result<DaemonFlags, String> {
    let mut f = DaemonFlags::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            return Err(format!("unexpected argument {arg:?}"));
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        if name == "h" || name == "help" {
            return Err(String::new());
        }
        if name == "broadcast" {
            f.timing.broadcast = match inline.as_deref() {
                None | Some("true") | Some("1") | Some("t") | Some("T") | Some("TRUE") => true,
                Some("false") | Some("0") | Some("f") | Some("F") | Some("FALSE") => false,
                Some(v) => {
                    return Err(format!(
                        "invalid boolean value {v:?} for -broadcast: parse error"
                    ));
                }
            };
            continue;
        }
        const VALUED: [&str; 7] = [
            "socketpath",
            "hostprefix",
            "pidfile",
            "statedir",
            "timeout",
            "resendmax",
            "resendtimeout",
        ];
        if !VALUED.contains(&name) {
            return Err(format!("flag provided but not defined: -{name}"));
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| format!("flag needs an argument: -{name}"))?,
        };
        let duration = |v: &str| {
            parse_duration(v)
                .ok_or_else(|| format!("invalid value {v:?} for flag -{name}: parse error"))
        };
        match name {
            "socketpath" => {
                if !value.is_empty() {
                    f.socket_path = value
                }
            }
            "hostprefix" => f.host_prefix = value,
            "pidfile" => f.pidfile = (!value.is_empty()).then(|| PathBuf::from(value)),
            "statedir" => f.state_dir = PathBuf::from(value),
            "timeout" => f.timing.timeout = duration(&value)?,
            "resendmax" => f.timing.resend_max = duration(&value)?,
            "resendtimeout" => f.timing.resend_timeout = duration(&value)?,
            _ => return Err(format!("flag provided but not defined: -{name}")),
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m2s"), Some(Duration::from_secs(62)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("s"), None);
    }

    #[test]
    fn flags_in_both_spellings() {
        let f = parse(&args(&[
            "-socketpath",
            "/tmp/x.sock",
            "--timeout=2s",
            "-broadcast",
            "-resendtimeout",
            "5s",
        ]))
        .unwrap();
        assert_eq!(f.socket_path, "/tmp/x.sock");
        assert_eq!(f.timing.timeout, Duration::from_secs(2));
        assert_eq!(f.timing.resend_timeout, Duration::from_secs(5));
        assert!(f.timing.broadcast);
        assert_eq!(
            parse(&args(&["-bogus"])).unwrap_err(),
            "flag provided but not defined: -bogus"
        );
        assert!(parse(&args(&["-timeout", "ten"])).is_err());
        assert!(parse(&args(&["-pidfile"])).is_err());
    }
}
