//! `CNI_ARGS`: `K=V;K2=V2` pairs, with the reference's `IgnoreUnknown` rule.

use crate::error::{Error, Result};

/// Parsed `CNI_ARGS`, in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pairs: Vec<(String, String)>,
}

impl CniArgs {
    /// Parse `K=V;K=V`. An empty string is no arguments. A pair without `=`
    /// is an invalid environment (code 4), as is an empty key.
    pub fn parse(s: &str) -> Result<Self> {
        let mut pairs = Vec::new();
        for item in s.split(';') {
            if item.is_empty() {
                continue;
            }
            match item.split_once('=') {
                Some((k, v)) if !k.is_empty() => pairs.push((k.to_string(), v.to_string())),
                _ => {
                    return Err(Error::invalid_env(format!("ARGS: invalid pair {item:?}"))
                        .with_details("CNI_ARGS must be of the form K=V;K2=V2"));
                }
            }
        }
        Ok(CniArgs { pairs })
    }

    /// The value of `key` (case-sensitive, as the reference). The last
    /// occurrence wins.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// Whether `IgnoreUnknown` is set to a true value (`1`, `true`).
    pub fn ignore_unknown(&self) -> bool {
        matches!(
            self.get("IgnoreUnknown")
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("1" | "true")
        )
    }

    /// Refuse keys outside `known` (plus `IgnoreUnknown`) unless
    /// `IgnoreUnknown` is true — the reference's rule for `CNI_ARGS`.
    pub fn check_known(&self, known: &[&str]) -> Result<()> {
        if let Some(v) = self.get("IgnoreUnknown")
            && !matches!(
                v.to_ascii_lowercase().as_str(),
                "1" | "true" | "0" | "false"
            )
        {
            return Err(Error::invalid_env(format!(
                "ARGS: IgnoreUnknown: {v:?} is not a boolean"
            )));
        }
        if self.ignore_unknown() {
            return Ok(());
        }
        let unknown: Vec<String> = self
            .pairs
            .iter()
            .filter(|(k, _)| k != "IgnoreUnknown" && !known.contains(&k.as_str()))
            .map(|(k, _)| format!("{k:?}"))
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(Error::invalid_env(format!(
                "ARGS: unknown args [{}]",
                unknown.join(" ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::code;

    #[test]
    fn parses_pairs_and_empty() {
        let a = CniArgs::parse("IgnoreUnknown=1;IP=10.0.0.5;K8S_POD_NAME=x=y").unwrap();
        assert_eq!(a.get("IP"), Some("10.0.0.5"));
        assert_eq!(a.get("K8S_POD_NAME"), Some("x=y"));
        assert_eq!(a.get("ip"), None);
        assert!(a.ignore_unknown());
        assert!(CniArgs::parse("").unwrap().pairs().is_empty());
        assert!(CniArgs::parse("A=1;").unwrap().get("A").is_some());
    }

    #[test]
    fn invalid_pair_is_code_4_naming_it() {
        for bad in ["novalue", "A=1;B", "=v"] {
            let e = CniArgs::parse(bad).unwrap_err();
            assert_eq!(e.code, code::INVALID_ENV);
            assert!(e.msg.starts_with("ARGS: invalid pair"), "{}", e.msg);
        }
    }

    #[test]
    fn unknown_keys_refused_unless_ignore_unknown() {
        let a = CniArgs::parse("MAC=02:00:00:00:00:01;K8S_POD_NAME=p").unwrap();
        let e = a.check_known(&["MAC"]).unwrap_err();
        assert_eq!(e.msg, "ARGS: unknown args [\"K8S_POD_NAME\"]");
        let a = CniArgs::parse("IgnoreUnknown=true;K8S_POD_NAME=p").unwrap();
        assert!(a.check_known(&["MAC"]).is_ok());
        let a = CniArgs::parse("IgnoreUnknown=0;K8S_POD_NAME=p").unwrap();
        assert!(a.check_known(&["MAC"]).is_err());
        let a = CniArgs::parse("IgnoreUnknown=maybe").unwrap();
        assert!(a.check_known(&[]).is_err());
    }
}
