//! The error every mode enum's `FromStr` gives: the value it did not know and the names it does.
//!
//! Kept free of imports from the rest of the crate so any module, however low, can name its
//! spellings with it.

/// A value that is none of a mode's spellings. Its `Display` is the configuration message
/// ("`x` is not one of a, b, c"); callers add the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not one of {}", self.expected())]
pub struct UnknownName {
    pub value: String,
    /// The canonical spellings, in the order messages list them.
    pub names: &'static [&'static str],
    /// Further accepted spellings of the same values, listed after the names.
    pub aliases: &'static [&'static str],
}

impl UnknownName {
    pub fn new(value: &str, names: &'static [&'static str]) -> Self {
        Self {
            value: value.to_string(),
            names,
            aliases: &[],
        }
    }

    pub fn with_aliases(mut self, aliases: &'static [&'static str]) -> Self {
        self.aliases = aliases;
        self
    }

    /// What a message says is accepted: see [`list`].
    pub fn expected(&self) -> String {
        list(self.names, self.aliases)
    }
}

/// "a, b, c (aliases: d, e)": the names, then any aliases.
pub fn list(names: &[&str], aliases: &[&str]) -> String {
    let mut out = names.join(", ");
    if !aliases.is_empty() {
        out.push_str(&format!(" (aliases: {})", aliases.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_lists_names_then_aliases() {
        let e = UnknownName::new("x", &["a", "b"]);
        assert_eq!(e.to_string(), "`x` is not one of a, b");
        let e = e.with_aliases(&["c"]);
        assert_eq!(e.to_string(), "`x` is not one of a, b (aliases: c)");
        assert_eq!(e.expected(), "a, b (aliases: c)");
    }
}
