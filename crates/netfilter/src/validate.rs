//! Every value that ends up in a rule passes through here first. Rules are
//! fed to `iptables-restore` and `nft -f` as text, so a stray quote, newline
//! or `;` would change the meaning of the whole batch; we refuse such values
//! instead of trying to escape them.

use crate::error::{Error, Result};

fn invalid(what: &'static str, value: &str, reason: &'static str) -> Error {
    Error::Invalid {
        what,
        value: value.to_string(),
        reason,
    }
}

/// CNI network names and container IDs: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`
/// (libcni's own check for both).
pub fn identifier(what: &'static str, value: &str) -> Result<()> {
    let mut chars = value.chars();
    match chars.next() {
        None => return Err(invalid(what, value, "must not be empty")),
        Some(c) if !c.is_ascii_alphanumeric() => {
            return Err(invalid(what, value, "must start with a letter or digit"));
        }
        _ => {}
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        return Err(invalid(
            what,
            value,
            "may contain only letters, digits, '_', '.' and '-'",
        ));
    }
    Ok(())
}

/// Interface names: what the kernel accepts (1–15 bytes, no '/', ':' or
/// whitespace), further restricted to printable ASCII without quotes.
pub fn ifname(value: &str) -> Result<()> {
    if value.is_empty() || value.len() > 15 {
        return Err(invalid("interface name", value, "must be 1 to 15 bytes"));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_graphic() && !matches!(c, '/' | ':' | '"' | '\'' | '\\'))
    {
        return Err(invalid(
            "interface name",
            value,
            "contains a character not allowed in an interface name",
        ));
    }
    Ok(())
}

/// An existing iptables chain named by the user (`externalSetMarkChain`).
pub fn chain_name(value: &str) -> Result<()> {
    if value.is_empty() || value.len() > 28 {
        return Err(invalid(
            "iptables chain name",
            value,
            "must be 1 to 28 bytes",
        ));
    }
    if value.starts_with('-')
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(invalid(
            "iptables chain name",
            value,
            "may contain only letters, digits, '_', '.' and '-' and must not start with '-'",
        ));
    }
    Ok(())
}

/// One token of `conditionsV4`/`conditionsV6` for iptables. Each token is one
/// argument; spaces are allowed (they get quoted) but quotes, backslashes and
/// control characters are not, so a token can never end the quoted argument
/// or the line it is written on.
pub fn iptables_condition(value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(invalid("iptables condition", value, "must not be empty"));
    }
    if value
        .chars()
        .any(|c| c.is_control() || matches!(c, '"' | '\'' | '\\'))
    {
        return Err(invalid(
            "iptables condition",
            value,
            "must not contain quotes, backslashes or control characters",
        ));
    }
    Ok(())
}

/// One token of `conditionsV4`/`conditionsV6` for nftables. `;`, `#` and
/// newlines would end the rule (and start a new command or a comment) inside
/// an `nft -f` script, so they are refused along with other control bytes.
pub fn nft_condition(value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(invalid("nftables condition", value, "must not be empty"));
    }
    if value
        .chars()
        .any(|c| c.is_control() || !c.is_ascii() || matches!(c, ';' | '#' | '\\' | '\''))
    {
        return Err(invalid(
            "nftables condition",
            value,
            "must be ASCII without ';', '#', quotes other than '\"', backslashes or control characters",
        ));
    }
    if !value.matches('"').count().is_multiple_of(2) {
        return Err(invalid(
            "nftables condition",
            value,
            "has an unbalanced double quote",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_refuse_rule_syntax() {
        assert!(identifier("container id", "abc-1.2_x").is_ok());
        for bad in ["", "-x", "a b", "a\"b", "a\nb", "a;b", "ä"] {
            assert!(identifier("container id", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn conditions_refuse_line_and_quote_breakers() {
        assert!(iptables_condition("-m").is_ok());
        assert!(iptables_condition("a b").is_ok());
        assert!(iptables_condition("x\"\n-A").is_err());
        assert!(nft_condition("iifname").is_ok());
        assert!(nft_condition("\"eth0\"").is_ok());
        assert!(nft_condition("x; flush ruleset").is_err());
        assert!(nft_condition("x\nflush ruleset").is_err());
        assert!(nft_condition("\"x").is_err());
    }

    #[test]
    fn chain_names() {
        assert!(chain_name("KUBE-MARK-MASQ").is_ok());
        assert!(chain_name("-j").is_err());
        assert!(chain_name("A B").is_err());
        assert!(chain_name(&"A".repeat(29)).is_err());
    }
}
