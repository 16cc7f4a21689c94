//! Property tests of the config parser, both shapes: any value in any field gives a config or
//! one error that names that field (`config.source.page_size: …`), never a panic, never a
//! key in the message; every integer setting is accepted exactly within its range, with the
//! documented message outside it.

mod common;

use common::{flat_base, load, nested_base, set};
use posthog_osiris::ExtractConfig;
use proptest::prelude::*;
use serde_json::{Value, json};

/// What a field accepts, as JSON kinds.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// An integer, checked against `min..=max`.
    Int(i64, i64),
    /// A finite number within `0.0..=max`.
    Float(f64),
    Bool,
    /// Free text, checked afterwards (a URL, a timestamp, a table name, ...).
    Text,
    /// One of these names.
    Name(&'static [&'static str]),
    /// A list of strings.
    Texts,
    /// A string of digits or a non-negative integer.
    ProjectId,
}

/// (nested path, flat path, kind) of every leaf setting. The flat shape has the source and
/// destination keys at the top level.
const FIELDS: [(&str, &str, Kind); 23] = [
    ("component_id", "component_id", Kind::Text),
    (
        "resolved_connection.api_key",
        "resolved_connection.api_key",
        Kind::Text,
    ),
    (
        "resolved_connection.project_id",
        "resolved_connection.project_id",
        Kind::ProjectId,
    ),
    (
        "resolved_connection.region",
        "resolved_connection.region",
        Kind::Name(&["us", "eu", "self_hosted"]),
    ),
    (
        "resolved_connection.custom_base_url",
        "resolved_connection.custom_base_url",
        Kind::Text,
    ),
    (
        "config.source.data_type",
        "data_type",
        Kind::Name(&[
            "events",
            "persons",
            "sessions",
            "cohorts",
            "feature_flags",
            "insights",
            "annotations",
            "experiments",
        ]),
    ),
    ("config.source.event_types", "event_types", Kind::Texts),
    (
        "config.source.lookback_window_minutes",
        "lookback_window_minutes",
        Kind::Int(0, 10_080),
    ),
    ("config.source.initial_since", "initial_since", Kind::Text),
    (
        "config.source.page_size",
        "page_size",
        Kind::Int(100, 50_000),
    ),
    (
        "config.source.incremental_field",
        "incremental_field",
        Kind::Name(&["timestamp", "created_at"]),
    ),
    (
        "config.source.deduplication_enabled",
        "deduplication_enabled",
        Kind::Bool,
    ),
    ("config.destination.table_name", "table_name", Kind::Text),
    ("config.destination.primary_key", "primary_key", Kind::Texts),
    (
        "output.format",
        "output.format",
        Kind::Name(&["parquet", "jsonl", "csv"]),
    ),
    (
        "output.part_rows",
        "output.part_rows",
        Kind::Int(1_000, 100_000_000),
    ),
    (
        "logging.level",
        "logging.level",
        Kind::Name(&["trace", "debug", "info", "warn", "warning", "error"]),
    ),
    ("logging.verbose_http", "logging.verbose_http", Kind::Bool),
    (
        "performance.batch_size",
        "performance.batch_size",
        Kind::Int(100, 1_000_000),
    ),
    (
        "performance.request_timeout",
        "performance.request_timeout",
        Kind::Int(1, 600),
    ),
    (
        "performance.pool_size",
        "performance.pool_size",
        Kind::Int(1, 64),
    ),
    (
        "performance.retries.max_attempts",
        "performance.retries.max_attempts",
        Kind::Int(1, 20),
    ),
    (
        "performance.retries.backoff_factor",
        "performance.retries.backoff_factor",
        Kind::Float(60.0),
    ),
];

/// A field and the shape it is set in: the base document and the path in it.
fn field_in_shape() -> impl Strategy<Value = (Value, &'static str, Kind)> {
    (prop::sample::select(FIELDS.to_vec()), any::<bool>()).prop_map(
        |((nested, flat, kind), is_nested)| {
            if is_nested {
                (nested_base(), nested, kind)
            } else {
                (flat_base(), flat, kind)
            }
        },
    )
}

/// Any JSON value, with the corners: huge and fractional numbers, negative numbers, odd text
/// (key-shaped text included), lists and mappings.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-100_000i64..100_000).prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        Just(json!(1e300)),
        Just(json!(2.5)),
        "\\PC{0,24}".prop_map(Value::from),
        "[a-z_]{1,12}".prop_map(Value::from),
        "phx_[A-Za-z0-9]{8,20}".prop_map(Value::from),
        Just(json!("2025-11-01T00:00:00Z")),
        Just(json!("https://posthog.example.com")),
        Just(json!("http://10.0.0.1:8000")),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Whether `value` is of a JSON kind `kind` accepts at all (its value may still be refused).
fn kind_fits(kind: Kind, value: &Value) -> bool {
    match kind {
        Kind::Int(..) => value.is_i64() || value.is_u64(),
        Kind::Float(_) => value.is_number(),
        Kind::Bool => value.is_boolean(),
        Kind::Text | Kind::Name(_) => value.is_string(),
        Kind::Texts => value
            .as_array()
            .is_some_and(|items| items.iter().all(Value::is_string)),
        Kind::ProjectId => value.is_string() || value.is_u64(),
    }
}

/// Whether `value` must be accepted (`Some(true)`) or refused (`Some(false)`) in a field of
/// `kind` set alone in a minimal config; `None` when that depends on checks of the text.
fn verdict(kind: Kind, path: &str, value: &Value) -> Option<bool> {
    if value.is_null() {
        return None; // "not given": a default, or "missing" for a required field
    }
    if !kind_fits(kind, value) {
        return Some(false);
    }
    match kind {
        Kind::Int(min, max) => {
            let n = value
                .as_i64()
                .map(i128::from)
                .or(value.as_u64().map(i128::from))?;
            Some((i128::from(min)..=i128::from(max)).contains(&n))
        }
        Kind::Float(max) => {
            let f = value.as_f64()?;
            Some((0.0..=max).contains(&f))
        }
        Kind::Bool => Some(true),
        Kind::Name(names) => {
            let name = value.as_str()?;
            // self_hosted then requires custom_base_url, which the minimal config lacks.
            let needs_more = path.ends_with(".region") && name == "self_hosted";
            Some(names.contains(&name) && !needs_more)
        }
        Kind::Text | Kind::Texts | Kind::ProjectId => None,
    }
}

/// Whether `field` names `path` or an item of it (`event_types[2]`).
fn names(field: &str, path: &str) -> bool {
    field == path || field.starts_with(&format!("{path}["))
}

fn int_out_of_range_message(path: &str, value: i128, min: i64, max: i64) -> String {
    format!("{path}: {value} is out of range {min}..={max}")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any value in one field of a valid config: a config, or an error naming that field
    /// (region `self_hosted` without a URL names `custom_base_url`, which it then requires).
    /// A value of the wrong JSON kind is always refused by name; `null` means "not given".
    #[test]
    fn any_value_in_any_field_is_accepted_or_refused_by_name(
        (base, path, kind) in field_in_shape(),
        value in json_value(),
    ) {
        let doc = set(base, path, value.clone());
        let text = doc.to_string();
        let verdict = verdict(kind, path, &value);
        match ExtractConfig::from_yaml_str(&text) {
            Ok(_) => prop_assert!(verdict != Some(false), "{} = {} was accepted", path, value),
            Err(err) => {
                prop_assert!(verdict != Some(true), "{} = {} was refused: {}", path, value, err);
                let msg = err.to_string();
                prop_assert!(
                    names(&err.field, path)
                        || (path.ends_with(".region")
                            && err.field == "resolved_connection.custom_base_url"),
                    "{} = {}: the error names {:?}: {}", path, value, err.field, msg
                );
                prop_assert!(msg.starts_with(&format!("{}: ", err.field)), "{}", msg);
                prop_assert!(err.message.len() > 3, "{}", msg);
                if let Some(text) = value.as_str()
                    && path.ends_with("api_key")
                    && text.len() >= 4
                {
                    prop_assert!(!msg.contains(text), "the key shows: {}", msg);
                }
            }
        }
    }

    /// Every integer setting, both shapes, any integer: accepted exactly within its range,
    /// else the documented message with the value and the bounds.
    #[test]
    fn integers_are_accepted_exactly_within_their_range(
        (base, path, kind) in field_in_shape().prop_filter("an integer setting", |(_, _, k)| matches!(k, Kind::Int(..))),
        value in prop_oneof![any::<i64>().prop_map(i128::from), (-200_000i128..200_000_000), any::<u64>().prop_map(i128::from)],
    ) {
        let Kind::Int(min, max) = kind else { unreachable!() };
        let number: Value = serde_json::from_str(&value.to_string()).unwrap();
        let result = load(&set(base, path, number));
        if (i128::from(min)..=i128::from(max)).contains(&value) {
            prop_assert!(result.is_ok(), "{} = {}: {:?}", path, value, result.err());
        } else {
            let err = result.expect_err("out of range");
            prop_assert_eq!(err.to_string(), int_out_of_range_message(path, value, min, max));
        }
    }

    /// The same settings written as YAML text rather than JSON, with YAML's own spellings of
    /// numbers (`0x10`, `1_000`, `+5`, `.5`, `~`): a config or an error naming the field.
    #[test]
    fn yaml_spellings_of_values_are_accepted_or_refused_by_name(
        (_, path, _) in field_in_shape().prop_filter("a top-level or one-deep setting", |(_, p, _)| !p.starts_with("config.") && p.matches('.').count() <= 1),
        spelling in prop_oneof![
            Just("0x10"), Just("1_000"), Just("+5"), Just(".5"), Just("~"), Just("1e3"),
            Just("yes"), Just("no"), Just("on"), Just("'500'"), Just("[1, 2]"), Just("{a: 1}"),
            Just("!!binary aGVsbG8="), Just("&a 5"), Just("-0"), Just("0o17"), Just(".inf"),
            Just(".nan"), Just("\"\\u0000\""), Just("99999999999999999999999999999999999999999"),
        ],
    ) {
        let mut lines = vec![
            "resolved_connection:".to_owned(),
            "  api_key: phx_test".to_owned(),
            "  project_id: \"12345\"".to_owned(),
            "  region: us".to_owned(),
        ];
        let (section, key) = path.split_once('.').map_or((None, path), |(s, k)| (Some(s), k));
        match section {
            Some("resolved_connection") => {
                lines.retain(|l| !l.trim_start().starts_with(&format!("{key}:")));
                lines.push(format!("  {key}: {spelling}"));
            }
            Some(section) => {
                lines.push(format!("{section}:"));
                lines.push(format!("  {key}: {spelling}"));
            }
            None => lines.push(format!("{key}: {spelling}")),
        }
        let text = lines.join("\n") + "\n";
        if let Err(err) = ExtractConfig::from_yaml_str(&text) {
            prop_assert!(
                names(&err.field, path)
                    || err.field == "<document>"
                    || (path.ends_with(".region") && err.field == "resolved_connection.custom_base_url"),
                "{}:\n{}\nnames {:?}: {}", path, text, err.field, err
            );
        }
    }
}
