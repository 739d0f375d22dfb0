//! `resolvConf`: the file's nameservers, domain, search list and options
//! become the result's `dns`, parsed like the reference's `dns.go`.

use std::io;
use std::path::Path;

use cni::{Dns, Error, Result, code};

pub fn parse_resolv_conf(path: &Path) -> Result<Dns> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::new(
            code::IO_FAILURE,
            format!("open {}: {}", path.display(), go_style(&e)),
        )
    })?;
    Ok(parse(&text))
}

fn parse(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [key, first, rest @ ..] = fields.as_slice() else {
            continue;
        };
        let all = || std::iter::once(first).chain(rest).map(|s| s.to_string());
        match *key {
            "nameserver" => dns.nameservers.push(first.to_string()),
            "domain" => dns.domain = first.to_string(),
            "search" => dns.search.extend(all()),
            "options" => dns.options.extend(all()),
            _ => {}
        }
    }
    dns
}

/// The reference prints Go's lower-case errno text ("no such file or
/// directory"); runtimes and people match on it.
fn go_style(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file or directory".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_key_and_skips_comments() {
        let dns = parse(
            "# comment\n; other\nnameserver 10.0.0.1\nnameserver 10.0.0.2 extra\n\
             domain example.com\nsearch a.example b.example\noptions ndots:5 rotate\nbogus\n",
        );
        assert_eq!(dns.nameservers, ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(dns.domain, "example.com");
        assert_eq!(dns.search, ["a.example", "b.example"]);
        assert_eq!(dns.options, ["ndots:5", "rotate"]);
    }

    #[test]
    fn missing_file_has_the_reference_message() {
        let e = parse_resolv_conf(Path::new("/etc/missing.conf")).unwrap_err();
        assert_eq!(e.msg, "open /etc/missing.conf: no such file or directory");
    }
}
