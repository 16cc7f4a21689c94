//! Both seed config shapes load into the same validated model, with the documented defaults.

mod common;

use std::time::Duration;

use common::*;
use posthog_client::Region;
use posthog_osiris::{DataType, ExtractConfig, IncrementalField, LogLevel, OutputFormat};
use secrecy::ExposeSecret;
use serde_json::json;
use time::macros::datetime;

#[test]
fn nested_seed_examples_load() {
    let basic = load_fixture("nested_basic.yaml");
    assert_eq!(basic.component_id, "posthog/osiris");
    assert_eq!(basic.connection.project_id, "12345");
    assert_eq!(basic.connection.region, Region::Us);
    assert_eq!(basic.source.data_type, DataType::Events);
    assert_eq!(basic.source.page_size, 1000);
    assert_eq!(basic.destination.table_name, "posthog_events");
    assert_eq!(basic.destination.primary_key, ["uuid"]);
    assert!(basic.inputs_state["posthog_events"]["last_timestamp"].is_null());

    let constrained = load_fixture("nested_constrained.yaml");
    assert_eq!(constrained.source.page_size, 500);
    assert_eq!(constrained.source.lookback_window_minutes, 10);
    assert_eq!(constrained.performance.batch_size, 1000);
    assert_eq!(
        constrained.performance.request_timeout,
        Duration::from_secs(60)
    );
    assert_eq!(constrained.performance.pool_size, 1);
    assert_eq!(constrained.performance.retries.max_attempts, 2);
    assert_eq!(constrained.performance.retries.backoff_factor, 2.0);
    assert_eq!(
        constrained.performance.retries.timeout,
        Duration::from_secs(60)
    );

    let persons = load_fixture("nested_persons.yaml");
    assert_eq!(persons.source.data_type, DataType::Persons);
    assert_eq!(
        persons.source.incremental_field,
        Some(IncrementalField::CreatedAt)
    );
    assert_eq!(persons.destination.primary_key, ["id"]);

    let filtered = load_fixture("nested_filtered.yaml");
    assert_eq!(filtered.source.event_types, ["$pageview", "$identify"]);
    assert_eq!(
        filtered.inputs_state["posthog_events_filtered"]["recent_uuids"],
        json!(["uuid-1", "uuid-2", "uuid-3"])
    );
}

#[test]
fn flat_seed_examples_load() {
    let events = load_fixture("flat_events.yaml");
    assert_eq!(events.source.data_type, DataType::Events);
    assert_eq!(
        events.source.event_types,
        ["$pageview", "$click", "user_signup"]
    );
    assert_eq!(events.source.lookback_window_minutes, 15);
    assert!(events.source.deduplication_enabled);
    assert_eq!(events.destination.table_name, "posthog_events");

    let persons = load_fixture("flat_persons.yaml");
    assert_eq!(persons.connection.region, Region::Eu);
    assert_eq!(persons.source.data_type, DataType::Persons);
    assert_eq!(persons.source.page_size, 500);
    assert!(!persons.source.deduplication_enabled);
    assert_eq!(
        persons.source.incremental_field, None,
        "persons default to a snapshot"
    );

    let history = load_fixture("flat_history.yaml");
    assert_eq!(
        history.source.initial_since,
        Some(datetime!(2024-01-01 00:00:00 UTC))
    );
    assert_eq!(history.source.page_size, 5000);

    let self_hosted = load_fixture("flat_self_hosted.yaml");
    match &self_hosted.connection.region {
        Region::SelfHosted(url) => assert_eq!(url.as_str(), "https://posthog.company.internal/"),
        other => panic!("expected self_hosted, got {other:?}"),
    }
}

#[test]
fn maximal_nested_config_sets_every_field() {
    let cfg = load_fixture("nested_maximal.yaml");
    assert_eq!(
        cfg.connection.project_id, "67890",
        "integer project IDs are accepted"
    );
    assert_eq!(
        cfg.connection.api_key.as_ref().map(|k| k.expose_secret()),
        Some("phx_maximal_example")
    );
    assert_eq!(
        cfg.connection.region.api_base().as_str(),
        "https://posthog.example.com/base"
    );
    assert_eq!(cfg.source.event_types, ["$pageview", "user_signup"]);
    assert_eq!(cfg.source.lookback_window_minutes, 60);
    assert_eq!(
        cfg.source.initial_since,
        Some(datetime!(2025-11-01 00:00:00 +01:00))
    );
    assert_eq!(cfg.source.page_size, 5000);
    assert_eq!(
        cfg.source.incremental_field,
        Some(IncrementalField::CreatedAt)
    );
    assert!(!cfg.source.deduplication_enabled);
    assert!(!cfg.source.include_person_properties);
    assert!(!cfg.output.flatten_properties);
    assert_eq!(cfg.destination.table_name, "web_events");
    assert_eq!(cfg.destination.primary_key, ["uuid", "event"]);
    assert_eq!(cfg.output.format, OutputFormat::Csv);
    assert_eq!(cfg.output.format.extension(), "csv");
    assert_eq!(
        cfg.output.location.as_ref().map(ToString::to_string),
        Some("s3://landing-bucket/posthog".to_owned())
    );
    assert_eq!(cfg.output.partition_by, posthog_osiris::PartitionBy::Day);
    assert_eq!(
        cfg.output.storage.endpoint.as_deref(),
        Some("http://127.0.0.1:9000")
    );
    assert_eq!(cfg.output.storage.region.as_deref(), Some("eu-west-1"));
    assert_eq!(cfg.output.storage.allow_http, Some(true));
    assert_eq!(cfg.output.storage.lease, Duration::from_secs(30));
    assert_eq!(cfg.logging.level, LogLevel::Debug);
    assert!(cfg.logging.verbose_http);
    assert_eq!(cfg.performance.batch_size, 20_000);
    assert_eq!(cfg.performance.request_timeout, Duration::from_secs(45));
    assert_eq!(cfg.performance.pool_size, 8);
    assert_eq!(cfg.performance.query_concurrency, 2);
    assert_eq!(cfg.performance.retries.max_attempts, 5);
    assert_eq!(cfg.performance.retries.backoff_factor, 0.5);
    assert_eq!(cfg.performance.retries.timeout, Duration::from_secs(120));
}

#[test]
fn defaults_follow_the_product_contract() {
    let cfg = ExtractConfig::from_yaml_str("resolved_connection: {project_id: '1'}\n").unwrap();
    assert_eq!(cfg.component_id, "posthog/osiris");
    assert!(
        cfg.connection.api_key.is_none(),
        "the CLI may supply the key later"
    );
    assert_eq!(cfg.connection.region, Region::Us);
    assert_eq!(cfg.source.data_type, DataType::Events);
    assert!(cfg.source.event_types.is_empty());
    assert_eq!(cfg.source.lookback_window_minutes, 15);
    assert_eq!(cfg.source.initial_since, None);
    assert_eq!(cfg.source.page_size, 1000);
    assert_eq!(
        cfg.source.incremental_field,
        Some(IncrementalField::Timestamp)
    );
    assert!(cfg.source.deduplication_enabled);
    assert_eq!(cfg.destination.table_name, "posthog_events");
    assert_eq!(cfg.destination.primary_key, ["uuid"]);
    assert!(cfg.inputs_state.is_empty());
    assert_eq!(cfg.output.format, OutputFormat::Parquet);
    assert_eq!(cfg.logging.level, LogLevel::Info);
    assert!(!cfg.logging.verbose_http);
    assert_eq!(cfg.performance.batch_size, 5000);
    assert_eq!(cfg.performance.request_timeout, Duration::from_secs(30));
    assert_eq!(cfg.performance.pool_size, 4);
    assert_eq!(cfg.performance.retries.max_attempts, 3);
    assert_eq!(cfg.performance.retries.backoff_factor, 1.0);
    assert_eq!(cfg.performance.retries.timeout, Duration::from_secs(30));
}

#[test]
fn snapshot_types_default_their_table_key_and_mode() {
    for (name, data_type) in [
        ("cohorts", DataType::Cohorts),
        ("feature_flags", DataType::FeatureFlags),
        ("insights", DataType::Insights),
        ("annotations", DataType::Annotations),
        ("experiments", DataType::Experiments),
        ("sessions", DataType::Sessions),
        ("persons", DataType::Persons),
    ] {
        let cfg = load(&set(nested_base(), "config.source.data_type", json!(name))).unwrap();
        assert_eq!(cfg.source.data_type, data_type);
        assert_eq!(cfg.destination.table_name, format!("posthog_{name}"));
        // The key is a column the table has: sessions are rows of `session_id`.
        let key = if data_type == DataType::Sessions {
            "session_id"
        } else {
            "id"
        };
        assert_eq!(cfg.destination.primary_key, [key], "{name}");
        assert_eq!(cfg.source.incremental_field, None, "{name} is a snapshot");
        assert!(!data_type.is_incremental());
    }
    assert!(DataType::Events.is_incremental());
}

#[test]
fn null_means_not_given() {
    let doc = json!({
        "resolved_connection": {"api_key": null, "project_id": 7, "region": null, "custom_base_url": null},
        "config": {"source": {"initial_since": null, "page_size": null, "event_types": null}, "destination": null},
        "inputs": {"state": null}, "output": null, "logging": {"level": null}, "performance": {"retries": null}
    });
    let cfg = load(&doc).unwrap();
    assert_eq!(cfg.source.page_size, 1000);
    assert_eq!(cfg.connection.region, Region::Us);
    assert_eq!(cfg.destination.table_name, "posthog_events");
}

#[test]
fn json_text_is_accepted_and_matches_yaml() {
    let from_json = ExtractConfig::from_yaml_str(
        r#"{"resolved_connection": {"project_id": "5", "region": "eu"},
            "config": {"source": {"data_type": "cohorts"}}, "output": {"format": "jsonl"}}"#,
    )
    .unwrap();
    let from_yaml = ExtractConfig::from_yaml_str(
        "resolved_connection:\n  project_id: '5'\n  region: eu\nconfig:\n  source:\n    data_type: cohorts\noutput:\n  format: jsonl\n",
    )
    .unwrap();
    assert_eq!(from_json.source, from_yaml.source);
    assert_eq!(from_json.destination, from_yaml.destination);
    assert_eq!(from_json.output.format, OutputFormat::Jsonl);
}

#[test]
fn from_value_validates_like_from_yaml_str() {
    let cfg = ExtractConfig::from_value(flat_base()).unwrap();
    assert_eq!(cfg.source.data_type, DataType::Events);
    let err = ExtractConfig::from_value(set(flat_base(), "page_size", json!(1))).unwrap_err();
    assert_eq!(err.to_string(), "page_size: 1 is out of range 100..=50000");
}

#[test]
fn warning_is_read_as_warn_and_self_hosted_loopback_may_use_http() {
    let doc = set(nested_base(), "logging.level", json!("warning"));
    assert_eq!(load(&doc).unwrap().logging.level, LogLevel::Warn);

    let doc = set(
        set(
            nested_base(),
            "resolved_connection.region",
            json!("self_hosted"),
        ),
        "resolved_connection.custom_base_url",
        json!("http://127.0.0.1:8010"),
    );
    let cfg = load(&doc).unwrap();
    assert_eq!(
        cfg.connection.region.api_base().as_str(),
        "http://127.0.0.1:8010/"
    );
}

#[test]
fn with_api_key_fills_a_missing_key_and_applies_the_same_rules() {
    let cfg = ExtractConfig::from_yaml_str("resolved_connection: {project_id: '1'}").unwrap();
    let conn = cfg
        .connection
        .clone()
        .with_api_key("phx_from_file".into())
        .unwrap();
    assert_eq!(conn.api_key.unwrap().expose_secret(), "phx_from_file");

    let err = cfg
        .connection
        .with_api_key("phc_SECRETKEY987".into())
        .unwrap_err();
    assert_eq!(err.field, "api_key");
    assert!(!err.to_string().contains("SECRETKEY987"), "{err}");
}
