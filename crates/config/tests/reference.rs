//! The configuration schema and the reference generated from it: the committed page is the
//! current one, and every key says what it is (and, for a duration, in which unit).

use std::path::Path;

use certbound_config::schema::{description, json_schema, reference};
use serde_json::Value;

const REGENERATE: &str = "cargo run -- config-schema --markdown > docs/configuration.md";

/// Every key of every table: (dotted path, schema), tables themselves included.
fn keys(schema: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let defs = schema["$defs"].as_object().expect("$defs");
    let mut tables = vec![(String::new(), schema.clone())];
    tables.extend(
        defs.iter()
            .map(|(name, def)| (format!("$defs.{name}."), def.clone())),
    );
    for (prefix, table) in tables {
        for (key, value) in table["properties"].as_object().into_iter().flatten() {
            out.push((format!("{prefix}{key}"), value.clone()));
        }
    }
    out
}

#[test]
fn the_committed_configuration_reference_is_the_generated_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    let committed = std::fs::read_to_string(&path).expect("docs/configuration.md");
    let generated = reference();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || committed.lines().count().min(generated.lines().count()),
                |i| i,
            );
        panic!(
            "docs/configuration.md is stale (first difference at line {}): run `{REGENERATE}`",
            line + 1
        );
    }
}

#[test]
fn every_key_has_a_description() {
    let schema = json_schema();
    let keys = keys(&schema);
    assert!(keys.len() > 60, "only {} keys found", keys.len());
    let undocumented: Vec<&str> = keys
        .iter()
        .filter(|(_, v)| description(v).trim().is_empty())
        .map(|(k, _)| k.as_str())
        .collect();
    assert!(
        undocumented.is_empty(),
        "keys without a `///` description in crates/config/src/raw.rs: {undocumented:?}"
    );
}

/// A name that says the value is a length of time.
fn is_duration_name(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    [
        "timeout", "ttl", "wait", "lifetime", "interval", "age", "leeway",
    ]
    .iter()
    .any(|w| last.split('_').any(|part| part == *w))
}

fn has_word(text: &str, words: &[&str]) -> bool {
    text.split(|c: char| !c.is_ascii_alphabetic())
        .any(|w| words.iter().any(|x| w.eq_ignore_ascii_case(x)))
}

#[test]
fn every_duration_key_states_its_unit_in_its_schema_and_its_description() {
    let schema = json_schema();
    let mut durations = 0;
    for (key, value) in keys(&schema) {
        if !is_duration_name(&key) {
            continue;
        }
        durations += 1;
        let unit = value["x-unit"].as_str().unwrap_or("");
        let text = description(&value);
        match unit {
            "seconds" => assert!(
                has_word(&text, &["second", "seconds"]),
                "{key}: the description does not say seconds: {text}"
            ),
            "milliseconds" => assert!(
                has_word(&text, &["millisecond", "milliseconds"]),
                "{key}: the description does not say milliseconds: {text}"
            ),
            other => {
                panic!("{key} is a duration without x-unit seconds or milliseconds ({other:?})")
            }
        }
    }
    assert!(durations >= 12, "only {durations} duration keys found");
}

#[test]
fn the_reference_lists_every_duration_with_its_unit() {
    let page = reference();
    for (key, value) in keys(&json_schema()) {
        let Some(unit) = value["x-unit"].as_str().filter(|u| u.ends_with("seconds")) else {
            continue;
        };
        let name = key.rsplit('.').next().unwrap_or(&key);
        let row = page
            .lines()
            .find(|l| l.starts_with("| `") && l.contains(&format!("{name}` | **{unit}**")));
        assert!(
            row.is_some(),
            "{key} ({unit}) is missing from the durations table"
        );
    }
}

#[test]
fn every_table_refuses_unknown_keys() {
    let schema = json_schema();
    assert_eq!(schema["additionalProperties"], Value::Bool(false));
    for (name, def) in schema["$defs"].as_object().expect("$defs") {
        assert_eq!(
            def["additionalProperties"],
            Value::Bool(false),
            "$defs.{name} accepts unknown keys"
        );
    }
    assert_eq!(
        schema["properties"]["policies"]["additionalProperties"]["$ref"],
        "#/$defs/Policy"
    );
}

#[test]
fn no_key_admits_null_which_toml_cannot_write() {
    fn walk(path: &str, v: &Value) {
        match v {
            Value::Object(m) => {
                assert_ne!(m.get("type"), Some(&Value::from("null")), "{path}");
                if let Some(Value::Array(types)) = m.get("type") {
                    assert!(!types.contains(&Value::from("null")), "{path}");
                }
                for (k, v) in m {
                    walk(&format!("{path}/{k}"), v);
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(path, i)),
            _ => {}
        }
    }
    walk("", &json_schema());
}
