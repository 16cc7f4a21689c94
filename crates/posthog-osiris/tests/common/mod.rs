//! Helpers shared by the integration tests: fixtures, and configs built by editing a base.

#![allow(dead_code)] // each test binary uses its own subset

pub mod engine;

use std::path::PathBuf;

use posthog_osiris::{ConfigError, ExtractConfig};
use serde_json::{Value, json};

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn fixture_text(name: &str) -> String {
    std::fs::read_to_string(fixture_path(name)).expect("fixture is readable")
}

pub fn load_fixture(name: &str) -> ExtractConfig {
    ExtractConfig::from_path(&fixture_path(name))
        .unwrap_or_else(|e| panic!("fixture {name} should load: {e}"))
}

/// A minimal valid nested config.
pub fn nested_base() -> Value {
    json!({
        "resolved_connection": {"api_key": "phx_test", "project_id": "12345", "region": "us"},
        "config": {"source": {"data_type": "events"}, "destination": {}}
    })
}

/// A minimal valid flat config.
pub fn flat_base() -> Value {
    json!({
        "resolved_connection": {"api_key": "phx_test", "project_id": "12345", "region": "us"},
        "data_type": "events"
    })
}

/// Sets `value` at the dotted `path` (creating mappings on the way) in `doc`.
pub fn set(mut doc: Value, path: &str, value: Value) -> Value {
    let mut at = &mut doc;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            at[part] = value;
            break;
        }
        if at.get(part).is_none_or(Value::is_null) {
            at[part] = json!({});
        }
        at = &mut at[part];
    }
    doc
}

/// Loads a document through the YAML entry point (JSON text is YAML).
pub fn load(doc: &Value) -> Result<ExtractConfig, ConfigError> {
    ExtractConfig::from_yaml_str(&doc.to_string())
}

pub fn load_err(doc: &Value) -> ConfigError {
    match load(doc) {
        Ok(_) => panic!("expected an error for {doc}"),
        Err(e) => e,
    }
}

pub fn yaml_err(text: &str) -> ConfigError {
    match ExtractConfig::from_yaml_str(text) {
        Ok(_) => panic!("expected an error for {text}"),
        Err(e) => e,
    }
}
