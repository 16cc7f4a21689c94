//! `docs/configuration.md` is checked against the code, so it cannot fall behind it:
//!
//! - every ```yaml block is loaded by the real loader and must be accepted; a block fenced
//!   ```yaml error must be refused with exactly the message of the ```text block after it;
//! - the ```yaml defaults block (every field written out at its documented default) must load
//!   into the same config as the ```yaml minimal block;
//! - the reference tables must name every field of the component's JSON Schema, with the
//!   schema's default, range, accepted names and pattern;
//! - the flat-shape table must map every source and destination key, and the data type table
//!   must agree with the component spec.

use std::path::PathBuf;

use posthog_osiris::{ExtractConfig, component_spec};
use serde_json::Value;

/// One fenced block of the document.
struct Block {
    /// The info string after the opening fence, e.g. `yaml error`.
    info: String,
    text: String,
    /// 1-based line of the opening fence, for messages.
    line: usize,
}

fn doc_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md")
}

fn doc() -> String {
    std::fs::read_to_string(doc_path()).expect("docs/configuration.md is readable")
}

fn blocks(doc: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in doc.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_owned(),
                    text: String::new(),
                    line: i + 1,
                });
            }
            (Some(_), Some(rest)) if rest.trim().is_empty() => {
                blocks.extend(open.take());
            }
            (Some(block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "an unclosed code fence in configuration.md");
    blocks
}

fn words(info: &str) -> Vec<&str> {
    info.split_whitespace().collect()
}

fn load(block: &Block) -> ExtractConfig {
    ExtractConfig::from_yaml_str(&block.text).unwrap_or_else(|e| {
        panic!(
            "configuration.md line {}: the example is refused: {e}\n{}",
            block.line, block.text
        )
    })
}

#[test]
fn every_yaml_example_is_accepted_and_every_error_example_fails_as_shown() {
    let doc = doc();
    let blocks = blocks(&doc);
    let mut accepted = 0;
    let mut refused = 0;
    for (i, block) in blocks.iter().enumerate() {
        let info = words(&block.info);
        if info.first() != Some(&"yaml") {
            continue;
        }
        if info.contains(&"error") {
            let expected = blocks
                .get(i + 1)
                .filter(|b| b.info == "text")
                .unwrap_or_else(|| {
                    panic!(
                        "configuration.md line {}: a ```yaml error block must be followed by a \
                         ```text block with the message",
                        block.line
                    )
                });
            let err = ExtractConfig::from_yaml_str(&block.text).expect_err(&format!(
                "configuration.md line {}: this example should be refused:\n{}",
                block.line, block.text
            ));
            assert_eq!(
                err.to_string(),
                expected.text.trim(),
                "configuration.md line {}: the documented message differs from the loader's",
                expected.line
            );
            assert_eq!(err.category().as_str(), "config");
            refused += 1;
        } else {
            load(block);
            accepted += 1;
        }
    }
    assert!(accepted >= 8, "only {accepted} accepted examples found");
    assert!(refused >= 8, "only {refused} error examples found");
}

#[test]
fn the_defaults_example_equals_the_minimal_example() {
    let doc = doc();
    let blocks = blocks(&doc);
    let find = |tag: &str| {
        blocks
            .iter()
            .find(|b| words(&b.info) == ["yaml", tag])
            .unwrap_or_else(|| panic!("no ```yaml {tag} block"))
    };
    let minimal = load(find("minimal"));
    let defaults = load(find("defaults"));
    assert_eq!(defaults.component_id, minimal.component_id);
    assert_eq!(
        defaults.connection.project_id,
        minimal.connection.project_id
    );
    assert_eq!(defaults.connection.region, minimal.connection.region);
    assert_eq!(defaults.source, minimal.source);
    assert_eq!(defaults.destination, minimal.destination);
    assert_eq!(defaults.inputs_state, minimal.inputs_state);
    assert_eq!(defaults.output, minimal.output);
    assert_eq!(defaults.logging, minimal.logging);
    assert_eq!(defaults.performance, minimal.performance);
}

/// The cells of the table row whose first cell is `` `key` ``, backticks kept.
fn row<'a>(doc: &'a str, key: &str) -> Option<Vec<&'a str>> {
    let first = format!("`{key}`");
    doc.lines().find_map(|line| {
        let cells: Vec<&str> = line
            .trim()
            .strip_prefix('|')?
            .strip_suffix('|')?
            .split('|')
            .map(str::trim)
            .collect();
        (cells.first() == Some(&first.as_str())).then_some(cells)
    })
}

/// Every leaf of the schema (a property without properties of its own), with its dotted path.
fn leaves(schema: &Value, prefix: &str, out: &mut Vec<(String, Value)>) {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, sub) in properties {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        if sub.get("properties").is_some() {
            leaves(sub, &path, out);
        } else {
            out.push((path, sub.clone()));
        }
    }
}

fn schema_leaves() -> Vec<(String, Value)> {
    let spec = serde_json::to_value(component_spec()).expect("spec serializes");
    let mut out = Vec::new();
    leaves(&spec["config_schema"], "", &mut out);
    assert!(out.len() >= 25, "the schema walk found only {out:?}");
    out
}

/// A JSON default as the table writes it.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[test]
fn the_reference_tables_name_every_field_with_its_default_and_range() {
    let doc = doc();
    for (path, schema) in schema_leaves() {
        let cells = row(&doc, &path).unwrap_or_else(|| {
            panic!("configuration.md has no reference row for `{path}`: the doc is behind the code")
        });
        assert!(cells.len() >= 4, "`{path}`: row {cells:?}");
        let (default, accepted) = (cells[1].replace('`', ""), cells[2]);
        if let Some(value) = schema.get("default") {
            let value = shown(value);
            assert!(
                default == value || default.starts_with(&format!("{value} ")),
                "`{path}`: the doc says the default is {default:?}, the code {value:?}"
            );
        }
        if let (Some(min), Some(max)) = (schema.get("minimum"), schema.get("maximum")) {
            let range = format!("{min}..={max}");
            assert!(
                accepted.contains(&range),
                "`{path}`: the doc says {accepted:?}, the code accepts {range}"
            );
        }
        for name in schema
            .get("enum")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            assert!(
                accepted.contains(&format!("`{name}`")),
                "`{path}`: the doc's accepted values {accepted:?} do not list `{name}`"
            );
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            assert!(accepted.contains(pattern), "`{path}`: pattern {pattern}");
        }
        if let Some(max) = schema.pointer("/items/maxLength") {
            assert!(accepted.contains(&max.to_string()), "`{path}`: {accepted}");
        }
    }
}

#[test]
fn the_flat_shape_table_maps_every_source_and_destination_key() {
    let doc = doc();
    let mut mapped = 0;
    for (path, _) in schema_leaves() {
        let Some(key) = path
            .strip_prefix("config.source.")
            .or_else(|| path.strip_prefix("config.destination."))
        else {
            continue;
        };
        let cells =
            row(&doc, key).unwrap_or_else(|| panic!("the flat-shape table has no row for `{key}`"));
        assert_eq!(cells[1], format!("`{path}`"), "flat key `{key}`");
        // The flat example's key really is accepted at the top level.
        let flat = format!("resolved_connection: {{project_id: \"1\"}}\n{key}: null\n");
        ExtractConfig::from_yaml_str(&flat)
            .unwrap_or_else(|e| panic!("flat key `{key}` is refused: {e}"));
        mapped += 1;
    }
    assert_eq!(mapped, 10);
}

#[test]
fn the_data_type_table_agrees_with_the_component_spec() {
    let doc = doc();
    let spec = serde_json::to_value(component_spec()).expect("spec serializes");
    let backticked = |values: &Value| -> String {
        let names: Vec<String> = values
            .as_array()
            .expect("a list")
            .iter()
            .map(|v| format!("`{}`", shown(v)))
            .collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    };
    let data_types = spec["data_types"].as_array().expect("data types");
    assert_eq!(data_types.len(), 8);
    for data_type in data_types {
        let name = shown(&data_type["name"]);
        // The data type table is the one whose rows have six cells.
        let cells = doc
            .lines()
            .filter(|l| l.starts_with(&format!("| `{name}` |")))
            .map(|l| {
                l.trim_matches('|')
                    .split('|')
                    .map(str::trim)
                    .collect::<Vec<_>>()
            })
            .find(|cells| cells.len() == 6)
            .unwrap_or_else(|| panic!("no data type row for `{name}`"));
        assert_eq!(cells[2], shown(&data_type["default_mode"]), "{name}");
        assert_eq!(
            cells[3],
            backticked(&data_type["incremental_fields"]),
            "{name}"
        );
        assert_eq!(
            cells[4],
            format!("`{}`", shown(&data_type["default_table_name"])),
            "{name}"
        );
        assert_eq!(
            cells[5],
            backticked(&data_type["default_primary_key"]),
            "{name}"
        );
    }
}
