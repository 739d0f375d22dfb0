//! An `iptables-restore --noflush` input for the `nat` table, built from
//! validated tokens.

/// Lines between `*nat` and `COMMIT`.
#[derive(Debug, Default)]
pub struct Batch {
    lines: Vec<String>,
}

/// Quote a token the way `iptables-save` does, so `iptables-restore` reads
/// it back as one argument. Tokens never contain `\` or control characters
/// (see `validate`), so escaping `"` is enough.
fn quote(token: &str) -> String {
    if token.is_empty() || token.contains([' ', '"', '\'']) {
        format!("\"{}\"", token.replace('"', "\\\""))
    } else {
        token.to_string()
    }
}

pub(crate) fn render(args: &[String]) -> String {
    args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
}

impl Batch {
    /// Number of lines between `*nat` and `COMMIT`.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Create `chain`, or flush it if it exists (`:` declaration semantics
    /// of `iptables-restore --noflush`).
    pub fn declare_chain(&mut self, chain: &str) {
        self.lines.push(format!(":{chain} - [0:0]"));
    }

    /// Create `chain`; the whole batch fails if it already exists.
    pub fn new_chain(&mut self, chain: &str) {
        self.lines.push(format!("-N {chain}"));
    }

    pub fn append(&mut self, chain: &str, args: &[String]) {
        self.lines.push(format!("-A {chain} {}", render(args)));
    }

    pub fn insert_first(&mut self, chain: &str, args: &[String]) {
        self.lines.push(format!("-I {chain} 1 {}", render(args)));
    }

    /// The whole batch fails unless this rule exists.
    pub fn check(&mut self, chain: &str, args: &[String]) {
        self.lines.push(format!("-C {chain} {}", render(args)));
    }

    /// Delete a rule given as `iptables-save` printed it.
    pub fn delete_saved(&mut self, chain: &str, saved_spec: &str) {
        self.lines.push(format!("-D {chain} {saved_spec}"));
    }

    pub fn flush_and_delete_chain(&mut self, chain: &str) {
        self.lines.push(format!("-F {chain}"));
        self.lines.push(format!("-X {chain}"));
    }

    /// The batch for `table` (`*nat`, `*filter`).
    pub fn render_table(&self, table: &str) -> String {
        let mut out = format!("*{table}\n");
        for l in &self.lines {
            out.push_str(l);
            out.push('\n');
        }
        out.push_str("COMMIT\n");
        out
    }
}

/// Build an argument vector from string literals and owned values.
#[macro_export]
#[doc(hidden)]
macro_rules! args {
    ($($a:expr),* $(,)?) => { vec![$(String::from($a)),*] };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_are_quoted_as_iptables_save_does() {
        let mut b = Batch::default();
        let rule = args![
            "-m",
            "comment",
            "--comment",
            "name: \"n\" id: \"c\"",
            "-j",
            "ACCEPT"
        ];
        b.append("X", &rule);
        assert_eq!(
            b.render_table("nat"),
            "*nat\n-A X -m comment --comment \"name: \\\"n\\\" id: \\\"c\\\"\" -j ACCEPT\nCOMMIT\n"
        );
    }
}
