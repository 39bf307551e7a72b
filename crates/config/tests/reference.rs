//! The configuration schema and the reference generated from it: the committed page is the
//! current one, every key says what it is (and, for a duration, in which unit), and the schema
//! and the loader agree on every key and its type.
#![allow(clippy::unwrap_used, clippy::expect_used)]

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
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
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

/// A JSON value as a TOML inline value.
fn toml(v: &Value) -> String {
    match v {
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(toml).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(m) => format!(
            "{{ {} }}",
            m.iter()
                .map(|(k, v)| format!("{k} = {}", toml(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

/// A value of the type the schema gives `key`: its default where it has one.
fn sample(key: &Value) -> Value {
    if let Some(d) = key.get("default") {
        return d.clone();
    }
    match key["type"].as_str() {
        Some("string") => key["enum"][0].as_str().unwrap_or("x").into(),
        Some("integer") => key.get("minimum").cloned().unwrap_or(1.into()),
        Some("boolean") => false.into(),
        Some("array") => Value::Array(vec![]),
        other => panic!("no sample for type {other:?}"),
    }
}

/// A leaf key of the schema: its dotted name, the TOML that sets it to a value, its schema.
type Placement = (String, Box<dyn Fn(&str) -> String>, Value);

fn placements(schema: &Value) -> Vec<Placement> {
    let defs = &schema["$defs"];
    let resolve = |v: &Value| -> Value {
        match v["$ref"].as_str().or(v["items"]["$ref"].as_str()) {
            Some(r) => defs[r.trim_start_matches("#/$defs/")].clone(),
            None => Value::Null,
        }
    };
    let mut out: Vec<Placement> = Vec::new();
    let top = schema["properties"].as_object().expect("properties");
    for (name, prop) in top {
        let table = resolve(prop);
        let Some(inner) = table["properties"].as_object() else {
            if name != "policies" {
                let n = name.clone();
                out.push((
                    name.clone(),
                    Box::new(move |v| format!("{n} = {v}\n")),
                    prop.clone(),
                ));
            }
            continue;
        };
        let array = prop["type"] == "array";
        for (key, value) in inner {
            let (n, k) = (name.clone(), key.clone());
            let place: Box<dyn Fn(&str) -> String> = if array {
                Box::new(move |v| format!("[[{n}]]\n{k} = {v}\n"))
            } else {
                Box::new(move |v| format!("[{n}]\n{k} = {v}\n"))
            };
            out.push((format!("{name}.{key}"), place, value.clone()));
        }
    }
    for (name, prop) in defs["Policy"]["properties"].as_object().expect("Policy") {
        if prop.get("$ref").is_none() {
            let n = name.clone();
            out.push((
                format!("policies.p.{name}"),
                Box::new(move |v| format!("[policies.p]\n{n} = {v}\n")),
                prop.clone(),
            ));
        }
    }
    out
}

fn load(toml: &str) -> String {
    use figment::providers::{Format, Toml};
    let figment = figment::Figment::new().merge(Toml::string(toml));
    match certbound_config::Config::from_figment(&figment, Path::new(".")) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_loader_reads_every_schema_key_and_refuses_it_with_another_type() {
    let schema = json_schema();
    let placements = placements(&schema);
    assert!(
        placements.len() > 60,
        "only {} keys placed",
        placements.len()
    );
    for (name, place, key) in &placements {
        let last = name.rsplit('.').next().unwrap_or(name);
        // The schema's type (its default, where it has one) is one the loader takes.
        let errors = load(&place(&toml(&sample(key))));
        let about_key: Vec<&str> = errors
            .lines()
            .filter(|l| l.contains(last) && (l.contains("unknown field") || l.contains("found")))
            .collect();
        assert!(about_key.is_empty(), "{name}: {about_key:?}");
        // A table is no key's type: the loader refuses it, naming the key.
        let errors = load(&place("{ wrong = 1 }"));
        assert!(
            errors
                .lines()
                .any(|l| l.contains(last) && l.contains("found a table")),
            "{name} = {{ wrong = 1 }} is not refused as a table: {errors}"
        );
    }
}
