//! The component spec describes the component truthfully, and its config schema covers exactly
//! the fields the config parser accepts.

mod common;

use std::collections::BTreeSet;

use common::*;
use posthog_osiris::{DataType, ExtractionMode, OutputFormat, component_spec};
use serde_json::Value;

/// Every key path in a config document, e.g. `config.source.page_size`. The contents of
/// `inputs.state` are free-form (one entry per table), so the walk stops there.
fn document_paths(value: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let Value::Object(map) = value {
        for (key, child) in map {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            if path != "inputs.state" {
                document_paths(child, &path, out);
            }
            out.insert(path);
        }
    }
}

/// Every property path a JSON Schema declares, looking through `anyOf`/`oneOf`.
fn schema_paths(schema: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let Some(Value::Object(props)) = schema.get("properties") {
        for (key, sub) in props {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            if path != "inputs.state" {
                schema_paths(sub, &path, out);
            }
            out.insert(path);
        }
    }
    for combinator in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(branches)) = schema.get(combinator) {
            for branch in branches {
                schema_paths(branch, prefix, out);
            }
        }
    }
}

/// The subschema at a dotted property path.
fn schema_at<'a>(schema: &'a Value, path: &str) -> &'a Value {
    let mut at = schema;
    for key in path.split('.') {
        at = find_property(at, key).unwrap_or_else(|| panic!("{path} is not in the schema"));
    }
    at
}

fn find_property<'a>(schema: &'a Value, key: &str) -> Option<&'a Value> {
    if let Some(p) = schema.get("properties").and_then(|p| p.get(key)) {
        return Some(p);
    }
    ["anyOf", "oneOf"]
        .iter()
        .filter_map(|c| schema.get(*c).and_then(Value::as_array))
        .flatten()
        .find_map(|branch| find_property(branch, key))
}

#[test]
fn schema_properties_are_exactly_the_fields_the_parser_accepts() {
    let text = fixture_text("nested_maximal.yaml");
    // The maximal fixture is accepted as a whole: every key in it is a field the parser knows.
    load_fixture("nested_maximal.yaml");
    let document: Value = serde_saphyr::from_str(&text).unwrap();
    let mut accepted = BTreeSet::new();
    document_paths(&document, "", &mut accepted);

    let schema = component_spec().config_schema;
    let mut declared = BTreeSet::new();
    schema_paths(&schema, "", &mut declared);

    assert_eq!(
        accepted, declared,
        "maximal config keys vs schema properties"
    );
    assert!(declared.contains("performance.retries.backoff_factor"));
}

#[test]
fn schema_is_draft_2020_12_and_closed_at_every_level() {
    let schema = component_spec().config_schema;
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(schema["additionalProperties"], false);
    for section in [
        "resolved_connection",
        "config.source",
        "config.destination",
        "performance.retries",
    ] {
        let sub = schema_at(&schema, section);
        let closed = sub["additionalProperties"] == false
            || sub["anyOf"]
                .as_array()
                .is_some_and(|b| b.iter().any(|s| s["additionalProperties"] == false));
        assert!(closed, "{section} must refuse unknown fields: {sub}");
    }
    let required = schema["required"].as_array().unwrap();
    assert!(required.contains(&"resolved_connection".into()));
    assert!(required.contains(&"config".into()));
}

#[test]
fn schema_states_the_same_bounds_and_defaults_as_the_validator() {
    let schema = component_spec().config_schema;
    let page_size = schema_at(&schema, "config.source.page_size");
    assert_eq!(page_size["minimum"], 100);
    assert_eq!(page_size["maximum"], 50_000);
    assert_eq!(page_size["default"], 1000);
    let lookback = schema_at(&schema, "config.source.lookback_window_minutes");
    assert_eq!(
        (lookback["minimum"].clone(), lookback["maximum"].clone()),
        (0.into(), 10_080.into())
    );
    let retries = schema_at(&schema, "performance.retries.max_attempts");
    assert_eq!(
        (retries["minimum"].clone(), retries["maximum"].clone()),
        (1.into(), 20.into())
    );
    let region = schema_at(&schema, "resolved_connection.region");
    let text = region.to_string();
    for name in ["us", "eu", "self_hosted"] {
        assert!(text.contains(&format!("\"{name}\"")), "{text}");
    }
    let data_type = schema_at(&schema, "config.source.data_type").to_string();
    for dt in DataType::ALL {
        assert!(data_type.contains(&format!("\"{dt}\"")), "{data_type}");
    }
    let table_name = schema_at(&schema, "config.destination.table_name");
    assert_eq!(table_name["pattern"], "^[A-Za-z_][A-Za-z0-9_]{0,127}$");
}

#[test]
fn spec_names_modes_capabilities_types_and_formats() {
    let spec = component_spec();
    let json = serde_json::to_value(&spec).unwrap();
    assert_eq!(json["name"], "posthog/osiris");
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        json["modes"],
        serde_json::json!(["extract", "discover", "doctor"])
    );
    let caps = &json["capabilities"];
    for yes in [
        "discover",
        "doctor",
        "incremental",
        "streaming",
        "state",
        "deduplication",
        "bulkOperations",
    ] {
        assert_eq!(caps[yes], true, "{yes}");
    }
    for no in [
        "adHocAnalytics",
        "inMemoryMove",
        "transactions",
        "partitioning",
        "customTransforms",
    ] {
        assert_eq!(caps[no], false, "{no}");
    }
    assert_eq!(
        json["secrets"],
        serde_json::json!(["/resolved_connection/api_key"])
    );

    assert_eq!(spec.data_types.len(), DataType::ALL.len());
    let events = &spec.data_types[0];
    assert_eq!(events.name, DataType::Events);
    assert_eq!(events.default_mode, ExtractionMode::Incremental);
    assert_eq!(events.default_primary_key, ["uuid"]);
    for dt in &spec.data_types[1..] {
        assert_eq!(dt.default_mode, ExtractionMode::Snapshot, "{}", dt.name);
        assert_eq!(dt.default_table_name, format!("posthog_{}", dt.name));
    }
    assert_eq!(json["data_types"][1]["name"], "persons");
    assert_eq!(
        json["data_types"][1]["incremental_fields"],
        serde_json::json!(["created_at"])
    );

    let formats: Vec<_> = spec
        .output_formats
        .iter()
        .map(|f| (f.name, f.extension))
        .collect();
    assert_eq!(
        formats,
        [
            (OutputFormat::Parquet, "parquet"),
            (OutputFormat::Jsonl, "jsonl"),
            (OutputFormat::Csv, "csv")
        ]
    );
}
