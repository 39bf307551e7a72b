//! `certbound import-kong`: a decK declarative file (`_format_version: "3.0"`) with
//! `openid-connect` plugins turned into a certbound configuration whose `[[routes]]` rules pick
//! the policy of each Kong route as Kong's router does, the Envoy routes that reach the Kong
//! services (routing only), and a report of everything that could not be carried over.
//!
//! Kong runs exactly one instance of a plugin per request, the most specific one: a route's
//! plugin, else its service's, else the global one. Their configurations are not merged, so
//! each plugin becomes one complete certbound policy: the global plugin the default policy,
//! every service or route plugin a `[policies.NAME]` table. certbound's named policies inherit
//! the default policy key by key, so a named policy also spells out, with Kong's default, every
//! key the default policy sets and its own plugin does not.
//!
//! Nothing may widen access quietly: a Kong rule certbound cannot enforce (groups, roles,
//! consumer mapping) refuses the import; a value that can only be dropped is named in the report.

mod deck;
mod envoy;
mod mapping;
mod rules;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use deck::{Plugin, Route, Scope};

/// One thing from the Kong file that the output does not carry, or carries differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Where in the Kong file: `plugins[0] (global)`, `service payments`, ...
    pub location: String,
    /// The Kong field (dotted for nested ones).
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.location, self.message)
        } else {
            write!(f, "{}: `{}`: {}", self.location, self.field, self.message)
        }
    }
}

/// What an import produces. Nothing is written by this module: the caller puts `toml`,
/// `envoy` and `files` into the output folder.
#[derive(Debug)]
pub struct Import {
    /// The certbound configuration (TOML).
    pub toml: String,
    /// Envoy routes, one per Kong route and path, to the Kong services' clusters; no
    /// per-route ext_authz settings.
    pub envoy: String,
    /// CA bundles resolved from the file's `ca_certificates` entities: file name, PEM.
    pub files: Vec<(PathBuf, String)>,
    pub notes: Vec<Note>,
}

impl Import {
    /// The report as text, one line per note.
    pub fn report(&self) -> String {
        if self.notes.is_empty() {
            return "Every Kong field was carried over.\n".into();
        }
        let mut out = format!(
            "{} Kong field(s) not carried over as they were:\n",
            self.notes.len()
        );
        for n in &self.notes {
            out.push_str(&format!("- {n}\n"));
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("not a YAML decK file: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error("{0}")]
    Format(String),
    /// Kong rules certbound cannot enforce: importing without them would widen access.
    #[error("refused, because the result would not protect what Kong protects:\n{}", .0.iter().map(|n| format!("- {n}")).collect::<Vec<_>>().join("\n"))]
    Refused(Vec<Note>),
}

/// Settings of the import that do not come from the Kong file.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Kong takes `trusted_ips` from kong.conf, not from the plugin; certbound needs them in
    /// its own file when `secure_source` is on.
    pub trusted_ips: Vec<String>,
}

/// Imports a decK file. `env` resolves `${{ env "DECK_..." }}` placeholders (decK's syntax);
/// unresolved ones are kept verbatim and reported.
pub fn import(
    source: &str,
    env: &dyn Fn(&str) -> Option<String>,
    options: &Options,
) -> Result<Import, ImportError> {
    let mut notes = Vec::new();
    let file = deck::parse(source, env, &mut notes)?;
    let ca_entities: BTreeMap<String, Option<String>> = file
        .ca_certificates
        .iter()
        .map(|c| (c.id.clone(), c.cert.clone()))
        .collect();
    let plan = mapping::plan(&file, &ca_entities, options, &mut notes)?;
    let rules = rules::build(&file, &plan, &mut notes)?;
    let toml = mapping::render_toml(&plan, rules::toml(&rules))?;
    let envoy = envoy::render(&rules);
    Ok(Import {
        toml,
        envoy,
        files: plan.files.clone(),
        notes,
    })
}

#[cfg(test)]
mod tests;
