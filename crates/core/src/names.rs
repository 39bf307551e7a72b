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

/// A mode enum whose values have one spelling each: the enum with `ALL` (its values in order),
/// `NAMES` (their spellings, in the same order), `as_str` and a `FromStr` whose error lists the
/// names. One row per value, so a value cannot be left without its spelling.
macro_rules! spelled {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $spelling:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            const COUNT: usize = [$($spelling),+].len();
            pub const ALL: [$name; Self::COUNT] = [$(Self::$variant),+];
            /// The spellings of `ALL`, in its order.
            pub const NAMES: [&'static str; Self::COUNT] = [$($spelling),+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $spelling, )+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::names::UnknownName;

            fn from_str(s: &str) -> Result<Self, $crate::names::UnknownName> {
                Self::ALL
                    .into_iter()
                    .find(|m| m.as_str() == s)
                    .ok_or_else(|| $crate::names::UnknownName::new(s, &Self::NAMES))
            }
        }
    };
}
pub(crate) use spelled;

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
