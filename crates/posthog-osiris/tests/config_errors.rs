//! Every invalid value is refused before any request, with one message that names the field.

mod common;

use common::*;
use posthog_osiris::ExtractConfig;
use serde_json::{Value, json};

/// (path in the nested shape, path in the flat shape, min, max).
const INT_RANGES: [(&str, &str, i64, i64); 9] = [
    ("config.source.page_size", "page_size", 100, 50_000),
    (
        "config.source.lookback_window_minutes",
        "lookback_window_minutes",
        0,
        10_080,
    ),
    (
        "performance.batch_size",
        "performance.batch_size",
        100,
        1_000_000,
    ),
    (
        "performance.request_timeout",
        "performance.request_timeout",
        1,
        600,
    ),
    ("performance.pool_size", "performance.pool_size", 1, 64),
    (
        "output.storage.lease_seconds",
        "output.storage.lease_seconds",
        5,
        3600,
    ),
    (
        "performance.query_concurrency",
        "performance.query_concurrency",
        1,
        3,
    ),
    (
        "performance.retries.max_attempts",
        "performance.retries.max_attempts",
        1,
        20,
    ),
    (
        "performance.retries.timeout_seconds",
        "performance.retries.timeout_seconds",
        1,
        3600,
    ),
];

#[test]
fn every_integer_range_is_enforced_below_at_and_above_its_bounds() {
    for (nested_path, flat_path, min, max) in INT_RANGES {
        for (base, field) in [(nested_base(), nested_path), (flat_base(), flat_path)] {
            for ok in [min, max] {
                let doc = set(base.clone(), field, json!(ok));
                if let Err(e) = load(&doc) {
                    panic!("{field} = {ok} should be accepted: {e}");
                }
            }
            for bad in [min - 1, max + 1] {
                let err = load_err(&set(base.clone(), field, json!(bad)));
                assert_eq!(
                    err.to_string(),
                    format!("{field}: {bad} is out of range {min}..={max}")
                );
            }
        }
    }
}

#[test]
fn range_errors_quote_the_product_contract_example() {
    let err = load_err(&set(nested_base(), "config.source.page_size", json!(70000)));
    assert_eq!(
        err.to_string(),
        "config.source.page_size: 70000 is out of range 100..=50000"
    );
    assert_eq!(err.category().as_str(), "config");
}

#[test]
fn huge_and_fractional_integers_are_refused_by_name() {
    let err = load_err(&set(
        nested_base(),
        "config.source.page_size",
        json!(u64::MAX),
    ));
    assert_eq!(
        err.to_string(),
        format!(
            "config.source.page_size: {} is out of range 100..=50000",
            u64::MAX
        )
    );
    let err = load_err(&set(nested_base(), "performance.pool_size", json!(2.5)));
    assert_eq!(err.field, "performance.pool_size");
    assert!(err.message.contains("expected an integer"), "{err}");
    let err = load_err(&set(
        nested_base(),
        "config.source.page_size",
        json!("1000"),
    ));
    assert_eq!(err.field, "config.source.page_size");
}

#[test]
fn backoff_factor_must_be_finite_and_within_bounds() {
    let field = "performance.retries.backoff_factor";
    for ok in [0.0, 60.0, 1.5] {
        let cfg = load(&set(nested_base(), field, json!(ok))).unwrap();
        assert_eq!(cfg.performance.retries.backoff_factor, ok);
    }
    for bad in [-0.1, 60.1] {
        let err = load_err(&set(nested_base(), field, json!(bad)));
        assert_eq!(
            err.to_string(),
            format!("{field}: {bad} is out of range 0.0..=60.0")
        );
    }
    let err = yaml_err(
        "resolved_connection: {project_id: '1'}\nperformance: {retries: {backoff_factor: .inf}}\n",
    );
    assert_eq!(err.field, "<document>");
    assert!(err.message.contains("line 2"), "{err}");
}

#[test]
fn unknown_fields_are_named_with_their_full_path_at_every_depth() {
    let cases = [
        ("config.source.pagesize", "did you mean page_size?"),
        (
            "config.destination.table",
            "expected one of table_name, primary_key",
        ),
        ("config.sink", "expected one of source, destination"),
        ("resolved_connection.token", "expected one of api_key"),
        ("performance.retries.attempts", "max_attempts"),
        ("logging.format", "expected one of level, verbose_http"),
        ("inputs.status", "expected state"),
        ("extra", "expected one of component_id"),
    ];
    for (field, hint) in cases {
        let err = load_err(&set(nested_base(), field, json!(1)));
        assert_eq!(err.field, field, "{err}");
        assert!(err.message.starts_with("unknown field ("), "{err}");
        assert!(err.message.contains(hint), "{err}");
    }
    let err = load_err(&set(flat_base(), "lookback_minutes", json!(5)));
    assert_eq!(err.field, "lookback_minutes");
    assert!(err.message.contains("lookback_window_minutes"), "{err}");
}

#[test]
fn unknown_region_lists_the_accepted_ones() {
    let err = load_err(&set(
        nested_base(),
        "resolved_connection.region",
        json!("mars"),
    ));
    assert_eq!(
        err.to_string(),
        r#"resolved_connection.region: unknown region "mars" (expected us, eu or self_hosted)"#
    );
}

#[test]
fn unknown_names_in_every_enum_field_are_refused() {
    for (path, what) in [
        ("config.source.data_type", "unknown data type \"tweets\""),
        (
            "config.source.incremental_field",
            "unknown incremental field \"tweets\"",
        ),
        ("output.format", "unknown output format \"tweets\""),
        ("logging.level", "unknown log level \"tweets\""),
    ] {
        let err = load_err(&set(nested_base(), path, json!("tweets")));
        assert_eq!(err.field, path);
        assert!(err.message.starts_with(what), "{err}");
    }
}

#[test]
fn bad_initial_since_names_the_field_and_shows_the_expected_form() {
    for bad in [
        "2025-13-01T00:00:00Z",
        "yesterday",
        "2025-11-01",
        "2025-11-01 00:00:00",
    ] {
        let err = load_err(&set(
            nested_base(),
            "config.source.initial_since",
            json!(bad),
        ));
        assert_eq!(err.field, "config.source.initial_since");
        assert!(err.message.contains(&format!("{bad:?}")), "{err}");
        assert!(err.message.contains("2025-11-01T00:00:00Z"), "{err}");
    }
    let err = load_err(&set(flat_base(), "initial_since", json!("soon")));
    assert_eq!(err.field, "initial_since");
}

#[test]
fn missing_project_id_is_reported_as_missing() {
    let doc = json!({"resolved_connection": {"api_key": "phx_a", "region": "us"}, "config": {}});
    assert_eq!(
        load_err(&doc).to_string(),
        "resolved_connection.project_id: missing"
    );
    let doc = json!({"resolved_connection": {"project_id": null}, "config": {}});
    assert_eq!(
        load_err(&doc).to_string(),
        "resolved_connection.project_id: missing"
    );
    let doc = json!({"data_type": "events"});
    assert_eq!(load_err(&doc).to_string(), "resolved_connection: missing");
}

#[test]
fn project_id_must_be_digits() {
    for bad in [
        json!(""),
        json!("abc"),
        json!("12a"),
        json!(" 12"),
        json!(-5),
        json!(1.5),
    ] {
        let err = load_err(&set(
            nested_base(),
            "resolved_connection.project_id",
            bad.clone(),
        ));
        assert_eq!(err.field, "resolved_connection.project_id", "{bad}: {err}");
    }
}

#[test]
fn self_hosted_requires_custom_base_url() {
    let err = load_err(&set(
        nested_base(),
        "resolved_connection.region",
        json!("self_hosted"),
    ));
    assert_eq!(
        err.to_string(),
        "resolved_connection.custom_base_url: missing (required with region self_hosted)"
    );
}

#[test]
fn custom_base_url_is_refused_with_a_cloud_region() {
    let err = load_err(&set(
        nested_base(),
        "resolved_connection.custom_base_url",
        json!("https://posthog.example.com"),
    ));
    assert_eq!(err.field, "resolved_connection.custom_base_url");
    assert!(
        err.message.contains("only allowed with region self_hosted"),
        "{err}"
    );
}

#[test]
fn plain_http_is_refused_for_non_loopback_hosts() {
    for bad in [
        "http://posthog.internal",
        "http://10.0.0.1:8000",
        "ftp://localhost",
        "nope",
    ] {
        let doc = set(
            set(
                nested_base(),
                "resolved_connection.region",
                json!("self_hosted"),
            ),
            "resolved_connection.custom_base_url",
            json!(bad),
        );
        let err = load_err(&doc);
        assert_eq!(
            err.field, "resolved_connection.custom_base_url",
            "{bad}: {err}"
        );
        assert!(
            !err.message.contains("invalid client configuration"),
            "{err}"
        );
    }
}

#[test]
fn project_keys_are_refused_and_no_key_text_ever_shows() {
    let secret = "SECRETKEY987";
    for key in [
        "phc_SECRETKEY987",
        "phs_SECRETKEY987",
        "",
        " phx_SECRETKEY987",
    ] {
        let err = load_err(&set(
            nested_base(),
            "resolved_connection.api_key",
            json!(key),
        ));
        assert_eq!(err.field, "resolved_connection.api_key", "{err}");
        assert!(!err.to_string().contains(secret), "{err}");
        assert!(!format!("{err:?}").contains(secret), "{err:?}");
    }
    let err = load_err(&set(
        nested_base(),
        "resolved_connection.api_key",
        json!(987_654_321),
    ));
    assert_eq!(err.field, "resolved_connection.api_key");
    assert!(!err.to_string().contains("987654321"), "{err}");

    let seed_verbatim = "resolved_connection:\n  api_key: \"phc_demo_key_1234567890\"\n  project_id: \"12345\"\n  region: \"us\"\ndata_type: events\n";
    let err = yaml_err(seed_verbatim);
    assert!(err.message.contains("project API key"), "{err}");
    assert!(!err.to_string().contains("demo_key"), "{err}");
}

#[test]
fn a_valid_key_never_appears_in_debug_output_or_in_later_errors() {
    let secret = "SECRETKEY987";
    let doc = set(
        nested_base(),
        "resolved_connection.api_key",
        json!("phx_SECRETKEY987"),
    );
    let cfg = load(&doc).unwrap();
    let debug = format!("{cfg:?}");
    assert!(!debug.contains(secret), "{debug}");
    assert!(debug.contains("REDACTED"), "{debug}");

    // The key sits next to every other kind of mistake: none of those errors may quote it.
    let broken: Vec<Value> = vec![
        set(doc.clone(), "config.source.page_size", json!(1)),
        set(doc.clone(), "config.source.nope", json!(1)),
        set(
            doc.clone(),
            "resolved_connection.region",
            json!("phx_SECRETKEY987"),
        ),
        set(
            doc.clone(),
            "config.source.page_size",
            json!("phx_SECRETKEY987"),
        ),
        set(
            doc.clone(),
            "config.destination.table_name",
            json!("phx_SECRETKEY987/.."),
        ),
        set(
            doc.clone(),
            "resolved_connection.project_id",
            json!("phx_SECRETKEY987"),
        ),
    ];
    for doc in broken {
        let err = load_err(&doc);
        assert!(!err.to_string().contains(secret), "{err}");
    }
    for text in [
        "resolved_connection: {api_key: phx_SECRETKEY987, project_id: '1'\n",
        "resolved_connection:\n  api_key: 'phx_SECRETKEY987\n",
        "resolved_connection:\n  api_key: phx_SECRETKEY987\n   bad: : indent\n",
        "resolved_connection:\n  api_key: phx_SECRETKEY987\n  api_key: phx_SECRETKEY987\n",
    ] {
        let err = yaml_err(text);
        assert!(!err.to_string().contains(secret), "{err}");
    }
}

#[test]
fn mixing_flat_and_nested_shapes_is_refused() {
    let err = load_err(&set(nested_base(), "page_size", json!(1000)));
    assert_eq!(err.field, "page_size");
    assert!(err.message.contains("config.source.page_size"), "{err}");
    let err = load_err(&set(nested_base(), "table_name", json!("t")));
    assert_eq!(err.field, "table_name");
    assert!(
        err.message.contains("config.destination.table_name"),
        "{err}"
    );
}

#[test]
fn table_name_must_be_a_safe_directory_name() {
    for bad in [
        "../x",
        "a/b",
        "..",
        "",
        "1events",
        "events-2025",
        &"t".repeat(129),
    ] {
        let err = load_err(&set(
            nested_base(),
            "config.destination.table_name",
            json!(bad),
        ));
        assert_eq!(err.field, "config.destination.table_name", "{bad}: {err}");
    }
    let err = load_err(&set(flat_base(), "table_name", json!("../x")));
    assert_eq!(err.field, "table_name");
    let ok = load(&set(
        nested_base(),
        "config.destination.table_name",
        json!("t".repeat(128)),
    ));
    assert!(ok.is_ok());
}

#[test]
fn primary_key_must_name_distinct_columns() {
    let field = "config.destination.primary_key";
    assert_eq!(load_err(&set(nested_base(), field, json!([]))).field, field);
    assert_eq!(
        load_err(&set(nested_base(), field, json!(["id", ""]))).field,
        format!("{field}[1]")
    );
    assert_eq!(
        load_err(&set(nested_base(), field, json!(["id", "id"]))).field,
        format!("{field}[1]")
    );
}

#[test]
fn event_types_are_checked_one_by_one() {
    let field = "config.source.event_types";
    let long = "e".repeat(201);
    let err = load_err(&set(nested_base(), field, json!(["$pageview", ""])));
    assert_eq!(err.to_string(), format!("{field}[1]: is empty"));
    let err = load_err(&set(nested_base(), field, json!([long])));
    assert_eq!(err.field, format!("{field}[0]"));
    assert!(load(&set(nested_base(), field, json!(["e".repeat(200)]))).is_ok());
    let err = load_err(&set(nested_base(), field, json!(["ok", 5])));
    assert_eq!(err.field, format!("{field}[1]"));
}

#[test]
fn events_only_fields_are_refused_for_other_data_types() {
    let cohorts = set(nested_base(), "config.source.data_type", json!("cohorts"));
    let err = load_err(&set(
        cohorts.clone(),
        "config.source.event_types",
        json!(["$pageview"]),
    ));
    assert_eq!(err.field, "config.source.event_types");
    assert!(err.message.contains("cohorts"), "{err}");
    let err = load_err(&set(
        cohorts,
        "config.source.incremental_field",
        json!("created_at"),
    ));
    assert_eq!(err.field, "config.source.incremental_field");

    let persons = set(nested_base(), "config.source.data_type", json!("persons"));
    assert!(
        load(&set(
            persons.clone(),
            "config.source.incremental_field",
            json!("created_at")
        ))
        .is_ok()
    );
    let err = load_err(&set(
        persons,
        "config.source.incremental_field",
        json!("timestamp"),
    ));
    assert_eq!(err.field, "config.source.incremental_field");

    let flat = set(flat_base(), "data_type", json!("feature_flags"));
    let err = load_err(&set(flat, "event_types", json!(["x"])));
    assert_eq!(err.field, "event_types");
}

#[test]
fn person_properties_are_an_events_option_on_by_default() {
    let field = "config.source.include_person_properties";
    assert!(
        load(&nested_base())
            .unwrap()
            .source
            .include_person_properties
    );
    let off = load(&set(nested_base(), field, json!(false))).unwrap();
    assert!(!off.source.include_person_properties);
    let persons = set(nested_base(), "config.source.data_type", json!("persons"));
    assert!(!load(&persons).unwrap().source.include_person_properties);
    let err = load_err(&set(persons, field, json!(true)));
    assert_eq!(
        err.to_string(),
        "config.source.include_person_properties: only valid with data_type events (persons \
         rows carry no person properties of their own)"
    );
    let err = load_err(&set(nested_base(), field, json!("yes")));
    assert_eq!(err.field, field);
    let flat = set(flat_base(), "include_person_properties", json!(false));
    assert!(!load(&flat).unwrap().source.include_person_properties);
}

#[test]
fn yaml_syntax_errors_point_at_the_document_with_a_position() {
    let err = yaml_err("resolved_connection: [1, 2\nconfig: 3\n");
    assert_eq!(err.field, "<document>");
    assert!(err.message.contains("line"), "{err}");
    assert_eq!(yaml_err("").field, "<document>");
    assert_eq!(yaml_err("- a\n- b\n").field, "<document>");
    assert_eq!(yaml_err("just text").field, "<document>");
}

#[test]
fn wrong_types_name_the_field_and_the_expected_type() {
    let err = load_err(&set(nested_base(), "config.source", json!([1, 2])));
    assert_eq!(
        err.to_string(),
        "config.source: expected a mapping, found a sequence"
    );
    let err = load_err(&set(
        nested_base(),
        "logging.verbose_http",
        json!("yes please"),
    ));
    assert_eq!(err.field, "logging.verbose_http");
    assert!(err.message.starts_with("expected a boolean"), "{err}");
    let err = load_err(&set(nested_base(), "config", json!(null)));
    assert_eq!(err.field, "config");
}

#[test]
fn an_unreadable_file_is_reported_on_its_path() {
    let path = fixture_path("does_not_exist.yaml");
    let err = ExtractConfig::from_path(&path).unwrap_err();
    assert_eq!(err.field, path.display().to_string());
    assert!(err.message.starts_with("cannot read the file: "), "{err}");
    assert!(!err.to_string().contains("<file>"), "{err}");
}

#[test]
fn a_file_that_is_not_a_config_names_the_file_and_a_bad_value_its_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        ("syntax.yaml", "a: [\n", "unclosed bracket"),
        ("empty.yaml", "", "the document is empty"),
        (
            "list.yaml",
            "- a\n- b\n",
            "expected a mapping at the top level",
        ),
    ];
    for (name, text, why) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        let err = ExtractConfig::from_path(&path).unwrap_err();
        assert_eq!(err.field, path.display().to_string(), "{err}");
        assert!(err.message.contains(why), "{err}");
        assert!(!err.to_string().contains("<document>"), "{err}");
    }
    // A value's error names the value's field, not the file.
    let path = dir.path().join("value.yaml");
    std::fs::write(
        &path,
        "resolved_connection: {project_id: \"1\", region: eu}\n\
         config: {source: {data_type: events, page_size: 70000}}\n",
    )
    .expect("write");
    let err = ExtractConfig::from_path(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        "config.source.page_size: 70000 is out of range 100..=50000"
    );
}

#[test]
fn the_first_error_is_reported_deterministically() {
    let doc = set(
        set(nested_base(), "config.source.page_size", json!(1)),
        "performance.pool_size",
        json!(0),
    );
    for _ in 0..3 {
        assert_eq!(load_err(&doc).field, "config.source.page_size");
    }
}

/// `output.location` is checked like every value: a URL of an unknown scheme, or an object URL
/// without a bucket, is refused naming the field; `partition_by: day` needs a time column.
#[test]
fn output_location_and_partitioning_are_checked() {
    for (bad, says) in [
        ("ftp://host/dir", "ftp"),
        ("s3://", "bucket"),
        ("s3://bucket/a/../b", ".."),
    ] {
        let err = load_err(&set(nested_base(), "output.location", json!(bad)));
        let text = err.to_string();
        assert!(text.starts_with("output.location: "), "{bad}: {text}");
        assert!(text.contains(says), "{bad}: {text}");
    }
    let ok = load(&set(nested_base(), "output.location", json!("gs://b/p"))).unwrap();
    assert_eq!(ok.output.location.unwrap().to_string(), "gs://b/p");
    let err = load_err(&set(
        set(nested_base(), "config.source.data_type", json!("cohorts")),
        "output.partition_by",
        json!("day"),
    ));
    assert!(
        err.to_string().starts_with("output.partition_by: "),
        "{err}"
    );
    let err = load_err(&set(nested_base(), "output.partition_by", json!("hour")));
    assert!(err.to_string().contains("output.partition_by"), "{err}");
}
