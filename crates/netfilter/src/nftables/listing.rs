//! Tables as `nft -a list table ...` prints them: chains, and each rule's
//! text, handle and comment.

#[derive(Debug, Default)]
pub struct Listing {
    pub chains: Vec<Chain>,
}

#[derive(Debug, Default)]
pub struct Chain {
    pub name: String,
    pub rules: Vec<Rule>,
}

#[derive(Debug)]
pub struct Rule {
    /// As nft prints it, without the `# handle N` suffix.
    pub text: String,
    pub handle: u64,
    pub comment: Option<String>,
}

impl Listing {
    pub fn parse(output: &str) -> Listing {
        let mut listing = Listing::default();
        for raw in output.lines() {
            let line = raw.trim();
            if let Some(rest) = line.strip_prefix("chain ") {
                let name = rest.split([' ', '{']).next().unwrap_or_default();
                listing.chains.push(Chain {
                    name: name.to_string(),
                    rules: Vec::new(),
                });
                continue;
            }
            // Rules are the only lines inside a chain that carry a handle.
            let Some((text, handle)) = line.rsplit_once(" # handle ") else {
                continue;
            };
            let (Ok(handle), Some(chain)) = (handle.trim().parse(), listing.chains.last_mut())
            else {
                continue;
            };
            if text.starts_with("table ") {
                continue;
            }
            chain.rules.push(Rule {
                text: text.to_string(),
                handle,
                comment: comment_of(text),
            });
        }
        listing
    }

    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    pub fn rules_in<'a>(&'a self, chain: &str) -> impl Iterator<Item = &'a Rule> + 'a {
        self.chain(chain).into_iter().flat_map(|c| c.rules.iter())
    }
}

/// The value of a trailing `comment "..."`.
fn comment_of(text: &str) -> Option<String> {
    let (_, rest) = text.rsplit_once(" comment \"")?;
    rest.strip_suffix('"').map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rules_with_handles_and_comments() {
        let out = r#"table ip cni_hostport { # handle 1
	comment "CNI portmap plugin"
	chain hostports { # handle 1
		tcp dport 8080 dnat to 10.0.0.2:80 comment "cid1" # handle 9
	}

	chain prerouting { # handle 6
		type nat hook prerouting priority dstnat; policy accept;
		fib daddr type local jump hostports_all # handle 7
	}
}
"#;
        let l = Listing::parse(out);
        let r: Vec<_> = l.rules_in("hostports").collect();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].handle, 9);
        assert_eq!(r[0].comment.as_deref(), Some("cid1"));
        assert_eq!(
            r[0].text,
            "tcp dport 8080 dnat to 10.0.0.2:80 comment \"cid1\""
        );
        let p: Vec<_> = l.rules_in("prerouting").collect();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].comment, None);
    }
}
