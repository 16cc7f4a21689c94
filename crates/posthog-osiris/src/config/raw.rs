//! The config as written: serde structs for both seed shapes, before any value is checked.
//!
//! Every struct denies unknown fields, so a misspelt key is an error that names its full path.
//! `null` anywhere means "not given" (the seeds write `initial_since: null`). The nested structs
//! also derive the JSON Schema published in the component spec, so their doc comments are the
//! schema's descriptions and the bounds below are its `minimum`/`maximum`/`default`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use secrecy::SecretString;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::error::{ConfigError, DOCUMENT_FIELD};
use super::names::{DataType, IncrementalField, LogLevel, OutputFormat, PartitionBy, RegionName};

/// An integer setting's accepted range and its default.
pub(crate) struct IntBounds {
    pub min: i64,
    pub max: i64,
    pub default: i64,
}

pub(crate) const PAGE_SIZE: IntBounds = IntBounds {
    min: 100,
    max: 50_000,
    default: 1000,
};
pub(crate) const LOOKBACK_WINDOW_MINUTES: IntBounds = IntBounds {
    min: 0,
    max: 10_080,
    default: 15,
};
pub(crate) const BATCH_SIZE: IntBounds = IntBounds {
    min: 100,
    max: 1_000_000,
    default: 5000,
};
pub(crate) const REQUEST_TIMEOUT: IntBounds = IntBounds {
    min: 1,
    max: 600,
    default: 30,
};
pub(crate) const POOL_SIZE: IntBounds = IntBounds {
    min: 1,
    max: 64,
    default: 4,
};
pub(crate) const QUERY_CONCURRENCY: IntBounds = IntBounds {
    min: 1,
    max: 3,
    default: 3,
};
pub(crate) const MAX_ATTEMPTS: IntBounds = IntBounds {
    min: 1,
    max: 20,
    default: 3,
};
pub(crate) const PART_ROWS: IntBounds = IntBounds {
    min: 1_000,
    max: 100_000_000,
    default: 1_000_000,
};
pub(crate) const MAX_COLUMNS: IntBounds = IntBounds {
    min: 16,
    max: 10_000,
    default: 1_000,
};
pub(crate) const LEASE_SECONDS: IntBounds = IntBounds {
    min: 5,
    max: 3_600,
    default: 60,
};
pub(crate) const QUERY_PER_MINUTE: IntBounds = IntBounds {
    min: 1,
    max: 100_000,
    default: 240,
};
pub(crate) const QUERY_PER_HOUR: IntBounds = IntBounds {
    min: 1,
    max: 6_000_000,
    default: 2400,
};
pub(crate) const RETRY_TIMEOUT_SECONDS: IntBounds = IntBounds {
    min: 1,
    max: 3600,
    default: 30,
};

/// `retries.backoff_factor`: finite, within `0.0..=60.0`, default `1.0`.
pub(crate) const BACKOFF_FACTOR_MAX: f64 = 60.0;
pub(crate) const BACKOFF_FACTOR_DEFAULT: f64 = 1.0;
/// The longest accepted event name in `event_types`, in characters.
pub(crate) const EVENT_TYPE_MAX_CHARS: usize = 200;
/// What `table_name` must match (it becomes a directory name).
pub(crate) const TABLE_NAME_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_]{0,127}$";
/// The component's identifier, and `component_id`'s default.
pub(crate) const COMPONENT_ID: &str = "posthog/osiris";

/// Keys of `config.source` and `config.destination` that the flat shape puts at the top level.
/// Seeing one next to `config` means the two shapes were mixed.
pub(crate) const FLAT_SECTION_KEYS: [(&str, &str); 10] = [
    ("data_type", "config.source"),
    ("event_types", "config.source"),
    ("lookback_window_minutes", "config.source"),
    ("initial_since", "config.source"),
    ("page_size", "config.source"),
    ("incremental_field", "config.source"),
    ("deduplication_enabled", "config.source"),
    ("include_person_properties", "config.source"),
    ("table_name", "config.destination"),
    ("primary_key", "config.destination"),
];

/// Configuration of the `posthog/osiris` component (the canonical, nested shape).
///
/// The flat shape of the older seeds (`resolved_connection` with the `config.source` and
/// `config.destination` keys at the top level, no `config` key) is accepted too. `null` means
/// "not given" everywhere.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
#[schemars(title = "posthog/osiris configuration")]
pub(crate) struct RawNested {
    /// Component identifier.
    #[schemars(extend("default" = COMPONENT_ID))]
    pub component_id: Option<String>,
    /// Connection to PostHog, resolved by the runtime before the component runs.
    pub resolved_connection: Section<RawConnection>,
    /// What to extract, and the table it becomes.
    pub config: Section<RawSections>,
    /// Inputs from the previous run.
    pub inputs: Option<Section<RawInputs>>,
    /// Output file format.
    pub output: Option<Section<RawOutput>>,
    /// Logging.
    pub logging: Option<Section<RawLogging>>,
    /// Performance tuning.
    pub performance: Option<Section<RawPerformance>>,
}

/// The flat shape: `resolved_connection` plus the source and destination keys at the top level.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(crate) struct RawFlat {
    pub component_id: Option<String>,
    pub resolved_connection: Section<RawConnection>,
    pub data_type: Option<DataType>,
    pub event_types: Option<Vec<String>>,
    pub lookback_window_minutes: Option<i128>,
    pub initial_since: Option<String>,
    pub page_size: Option<i128>,
    pub incremental_field: Option<IncrementalField>,
    pub deduplication_enabled: Option<bool>,
    pub include_person_properties: Option<bool>,
    pub table_name: Option<String>,
    pub primary_key: Option<Vec<String>>,
    pub inputs: Option<Section<RawInputs>>,
    pub output: Option<Section<RawOutput>>,
    pub logging: Option<Section<RawLogging>>,
    pub performance: Option<Section<RawPerformance>>,
}

/// PostHog connection: credentials, project and region.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(crate) struct RawConnection {
    /// Personal API key (`phx_…`) with read access to the project. May be left out and supplied
    /// by the runtime (a secret file or the environment). Project keys (`phc_…`) cannot read
    /// data and are refused.
    pub api_key: Option<RawApiKey>,
    /// Numeric project ID, as a string or an integer.
    pub project_id: RawProjectId,
    /// Where the project lives: `us` (https://us.posthog.com), `eu` (https://eu.posthog.com) or
    /// `self_hosted` (`custom_base_url`).
    #[schemars(extend("default" = "us"))]
    pub region: Option<RegionName>,
    /// Base URL of a self-hosted instance: required with `region: self_hosted`, refused
    /// otherwise. Must be `https://`; plain `http://` only for loopback hosts.
    #[schemars(extend("format" = "uri"))]
    pub custom_base_url: Option<String>,
}

/// The `config` section: source and destination.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(crate) struct RawSections {
    /// What to read from PostHog.
    pub source: Option<Section<RawSource>>,
    /// The table the data is written as.
    pub destination: Option<Section<RawDestination>>,
}

/// What to read from PostHog.
#[derive(Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(crate) struct RawSource {
    /// The resource to extract. Events are read incrementally, the others as a full snapshot
    /// per run (persons incrementally with `incremental_field: created_at`).
    #[schemars(extend("default" = "events"))]
    pub data_type: Option<DataType>,
    /// Event names to extract (events only); empty means all events.
    #[schemars(inner(length(min = 1, max = EVENT_TYPE_MAX_CHARS)), extend("default" = []))]
    pub event_types: Option<Vec<String>>,
    /// Minutes re-read before the last watermark on every incremental run, to catch late
    /// events; rows re-read are dropped by UUID.
    #[schemars(
        with = "Option<Integer>",
        range(min = LOOKBACK_WINDOW_MINUTES.min, max = LOOKBACK_WINDOW_MINUTES.max),
        extend("default" = LOOKBACK_WINDOW_MINUTES.default)
    )]
    pub lookback_window_minutes: Option<i128>,
    /// RFC 3339 timestamp the first run starts from (default: 30 days before the run), e.g.
    /// `2025-11-01T00:00:00Z`.
    #[schemars(extend("format" = "date-time"))]
    pub initial_since: Option<String>,
    /// Rows requested per API call.
    #[schemars(
        with = "Option<Integer>",
        range(min = PAGE_SIZE.min, max = PAGE_SIZE.max),
        extend("default" = PAGE_SIZE.default)
    )]
    pub page_size: Option<i128>,
    /// Column incremental runs order and resume on: `timestamp` (default for events) or
    /// `created_at` (events, and persons to run them incrementally).
    pub incremental_field: Option<IncrementalField>,
    /// Drop rows whose UUID was already emitted inside the lookback window.
    #[schemars(extend("default" = true))]
    pub deduplication_enabled: Option<bool>,
    /// Events only: also read the person's properties as they were at event time (HogQL
    /// `person.properties`), as `person_properties_*` columns.
    #[schemars(extend("default" = true))]
    pub include_person_properties: Option<bool>,
}

/// The table the data is written as.
#[derive(Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(crate) struct RawDestination {
    /// Table name, also the output directory name (default `posthog_<data_type>`).
    #[schemars(pattern(TABLE_NAME_PATTERN))]
    pub table_name: Option<String>,
    /// Primary key columns (default `[uuid]` for events, `[session_id]` for sessions, `[id]`
    /// otherwise).
    #[schemars(length(min = 1), inner(length(min = 1)))]
    pub primary_key: Option<Vec<String>>,
}

/// Inputs from the previous run.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(crate) struct RawInputs {
    /// Per table name, the state the previous run left (`last_timestamp`, `last_uuid`,
    /// `recent_uuids`, `columns`). Used when the state store has no entry for the table.
    pub state: Option<BTreeMap<String, Value>>,
}

/// Output file format.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(crate) struct RawOutput {
    /// Format of the part files.
    #[schemars(extend("default" = "parquet"))]
    pub format: Option<OutputFormat>,
    /// Rows per part file: a part closes at the first page boundary after it holds this many
    /// rows, and the run commits its state each time a part closes.
    #[schemars(
        with = "Option<Integer>",
        range(min = PART_ROWS.min, max = PART_ROWS.max),
        extend("default" = PART_ROWS.default)
    )]
    pub part_rows: Option<i128>,
    /// `true`: every key of `properties` (and `person_properties`) becomes its own
    /// `properties_<key>` column; `false`: each stays one JSON text column, as PostHog
    /// exports it.
    #[schemars(extend("default" = true))]
    pub flatten_properties: Option<bool>,
    /// Columns a table may have: once it has this many, a property key seen for the first
    /// time gets no column; its values go into `<field>__rest`, one JSON object per row.
    #[schemars(
        with = "Option<Integer>",
        range(min = MAX_COLUMNS.min, max = MAX_COLUMNS.max),
        extend("default" = MAX_COLUMNS.default)
    )]
    pub max_columns: Option<i128>,
    /// Where the tables land: a local path, or `s3://bucket/prefix`, `gs://bucket/prefix`,
    /// `az://container/prefix`, `file:///path`. `--output-dir` overrides it.
    #[schemars(extend("default" = "./posthog-output"))]
    pub location: Option<String>,
    /// `day`: parts go to `<table>/date=YYYY-MM-DD/` by the UTC date of the incremental field.
    #[schemars(extend("default" = "none"))]
    pub partition_by: Option<PartitionBy>,
    /// Options of an object-store location that are not secrets (credentials come from the
    /// environment).
    pub storage: Option<RawStorage>,
}

/// `output.storage`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(crate) struct RawStorage {
    /// The store's endpoint (an S3-compatible server: MinIO, R2, Ceph); overrides
    /// `AWS_ENDPOINT_URL`.
    pub endpoint: Option<String>,
    /// The bucket's region; overrides `AWS_REGION`.
    pub region: Option<String>,
    /// Allows a plain `http://` endpoint; overrides `AWS_ALLOW_HTTP`.
    pub allow_http: Option<bool>,
    /// How long a run's lease on a table (`<table>/_lease`) lasts unless renewed; a crashed
    /// run's lease expires after it.
    #[schemars(
        with = "Option<Integer>",
        range(min = LEASE_SECONDS.min, max = LEASE_SECONDS.max),
        extend("default" = LEASE_SECONDS.default)
    )]
    pub lease_seconds: Option<i128>,
}

/// Logging.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(crate) struct RawLogging {
    /// Log level (`warning` is read as `warn`).
    #[schemars(extend("default" = "info"))]
    pub level: Option<LogLevel>,
    /// Log each HTTP request and response (keys are always redacted).
    #[schemars(extend("default" = false))]
    pub verbose_http: Option<bool>,
}

/// Performance tuning.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(crate) struct RawPerformance {
    /// Rows buffered before a record batch is written.
    #[schemars(
        with = "Option<Integer>",
        range(min = BATCH_SIZE.min, max = BATCH_SIZE.max),
        extend("default" = BATCH_SIZE.default)
    )]
    pub batch_size: Option<i128>,
    /// Timeout of one HTTP request, in seconds.
    #[schemars(
        with = "Option<Integer>",
        range(min = REQUEST_TIMEOUT.min, max = REQUEST_TIMEOUT.max),
        extend("default" = REQUEST_TIMEOUT.default)
    )]
    pub request_timeout: Option<i128>,
    /// Concurrent HTTP connections.
    #[schemars(
        with = "Option<Integer>",
        range(min = POOL_SIZE.min, max = POOL_SIZE.max),
        extend("default" = POOL_SIZE.default)
    )]
    pub pool_size: Option<i128>,
    /// Keyset scans run at once (PostHog runs at most 3 queries per project at a time): a
    /// run with more than a few pages to read splits its time range into this many slices.
    #[schemars(
        with = "Option<Integer>",
        range(min = QUERY_CONCURRENCY.min, max = QUERY_CONCURRENCY.max),
        extend("default" = QUERY_CONCURRENCY.default)
    )]
    pub query_concurrency: Option<i128>,
    /// Client-side budget of HogQL query requests per minute (PostHog allows 240).
    #[schemars(
        with = "Option<Integer>",
        range(min = QUERY_PER_MINUTE.min, max = QUERY_PER_MINUTE.max),
        extend("default" = QUERY_PER_MINUTE.default)
    )]
    pub query_requests_per_minute: Option<i128>,
    /// Client-side budget of HogQL query requests per hour (PostHog allows 2400; some
    /// accounts 120).
    #[schemars(
        with = "Option<Integer>",
        range(min = QUERY_PER_HOUR.min, max = QUERY_PER_HOUR.max),
        extend("default" = QUERY_PER_HOUR.default)
    )]
    pub query_requests_per_hour: Option<i128>,
    /// Retries of retryable failures.
    pub retries: Option<Section<RawRetries>>,
}

/// Retries of retryable failures (connect errors, timeouts, 429, 5xx).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(crate) struct RawRetries {
    /// Attempts per request, the first included.
    #[schemars(
        with = "Option<Integer>",
        range(min = MAX_ATTEMPTS.min, max = MAX_ATTEMPTS.max),
        extend("default" = MAX_ATTEMPTS.default)
    )]
    pub max_attempts: Option<i128>,
    /// Base of the exponential backoff, in seconds.
    #[schemars(
        range(min = 0.0, max = BACKOFF_FACTOR_MAX),
        extend("default" = BACKOFF_FACTOR_DEFAULT)
    )]
    pub backoff_factor: Option<f64>,
    /// Total time allowed for one request and its retries, in seconds.
    #[schemars(
        with = "Option<Integer>",
        range(min = RETRY_TIMEOUT_SECONDS.min, max = RETRY_TIMEOUT_SECONDS.max),
        extend("default" = RETRY_TIMEOUT_SECONDS.default)
    )]
    pub timeout_seconds: Option<i128>,
}

/// A section of the config: a struct that must be written as a mapping.
///
/// serde's derived structs also accept a sequence of their fields in declaration order
/// (`source: [events, [], 15]`); a config with positional sections would be unreadable and
/// fragile, so sections are read only through `deserialize_map`.
pub(crate) struct Section<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Section<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SectionVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for SectionVisitor<T> {
            type Value = Section<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }

            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Section<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Section)
            }
        }

        deserializer.deserialize_map(SectionVisitor(PhantomData))
    }
}

impl<T: JsonSchema> JsonSchema for Section<T> {
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }

    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

/// Schema stand-in for the integer settings: read as `i128` so that any integer reaches
/// validation (and its range message), published as a plain JSON Schema `integer`.
pub(crate) struct Integer;

impl JsonSchema for Integer {
    fn schema_name() -> Cow<'static, str> {
        "Integer".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "integer" })
    }
}

/// The API key, held as a secret from the moment it is read. A value of the wrong type is
/// reported without quoting it.
pub(crate) struct RawApiKey(pub SecretString);

impl<'de> Deserialize<'de> for RawApiKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)
            .map(|key| RawApiKey(SecretString::from(key)))
            .map_err(|_| de::Error::custom("expected a string (the value is not shown)"))
    }
}

impl JsonSchema for RawApiKey {
    fn schema_name() -> Cow<'static, str> {
        "ApiKey".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "writeOnly": true })
    }
}

/// A project ID as written: a string or a non-negative integer. Checked in validation.
pub(crate) struct RawProjectId(pub String);

impl<'de> Deserialize<'de> for RawProjectId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ProjectIdVisitor;

        impl Visitor<'_> for ProjectIdVisitor {
            type Value = RawProjectId;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a numeric project ID (string or integer)")
            }

            fn visit_str<E: de::Error>(self, id: &str) -> Result<RawProjectId, E> {
                Ok(RawProjectId(id.to_owned()))
            }

            fn visit_u64<E: de::Error>(self, id: u64) -> Result<RawProjectId, E> {
                Ok(RawProjectId(id.to_string()))
            }

            fn visit_i64<E: de::Error>(self, id: i64) -> Result<RawProjectId, E> {
                // Non-negative i64s arrive through visit_u64; only negative ones get here.
                Err(E::custom(format!("{id} is not a numeric project ID")))
            }

            fn visit_unit<E: de::Error>(self) -> Result<RawProjectId, E> {
                Err(E::custom("missing"))
            }
        }

        deserializer.deserialize_any(ProjectIdVisitor)
    }
}

impl JsonSchema for RawProjectId {
    fn schema_name() -> Cow<'static, str> {
        "ProjectId".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "oneOf": [
                { "type": "string", "pattern": "^[0-9]+$" },
                { "type": "integer", "minimum": 0 }
            ]
        })
    }
}

/// The config with both shapes brought to one layout, each section remembering the path
/// prefix its keys had in the document, so validation errors name fields as written.
pub(crate) struct RawConfig {
    pub component_id: Option<String>,
    pub connection: RawConnection,
    pub source: RawSource,
    /// `config.source.` (nested) or empty (flat).
    pub source_prefix: &'static str,
    pub destination: RawDestination,
    /// `config.destination.` (nested) or empty (flat).
    pub destination_prefix: &'static str,
    pub inputs: Option<RawInputs>,
    pub output: Option<RawOutput>,
    pub logging: Option<RawLogging>,
    pub performance: Option<RawPerformance>,
}

/// Parses YAML (or JSON, which is YAML) into a JSON value. Error snippets are off: they would
/// quote lines of the document, the key's among them.
pub(crate) fn parse_yaml(text: &str) -> Result<Value, ConfigError> {
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    serde_saphyr::from_str_with_options(text, options).map_err(|e| ConfigError::yaml(&e))
}

impl RawConfig {
    /// Detects the shape (nested iff there is a `config` key) and maps the document onto it.
    pub(crate) fn from_value(value: Value) -> Result<RawConfig, ConfigError> {
        let map = match value {
            Value::Object(map) => map,
            Value::Null => {
                return Err(ConfigError::new(
                    DOCUMENT_FIELD,
                    "the document is empty (expected a mapping with resolved_connection)",
                ));
            }
            other => {
                return Err(ConfigError::new(
                    DOCUMENT_FIELD,
                    format!(
                        "expected a mapping at the top level, found {}",
                        kind(&other)
                    ),
                ));
            }
        };
        if !map.contains_key("config") {
            let flat: RawFlat = deserialize(Value::Object(map))?;
            return Ok(RawConfig::from_flat(flat));
        }
        if let Some((key, section)) = FLAT_SECTION_KEYS
            .iter()
            .find(|(key, _)| map.contains_key(*key))
        {
            return Err(ConfigError::new(
                *key,
                format!(
                    "a flat-shape key next to the nested `config` section; \
                     move it to {section}.{key} (the two shapes cannot be mixed)"
                ),
            ));
        }
        let nested: RawNested = deserialize(Value::Object(map))?;
        Ok(RawConfig::from_nested(nested))
    }

    fn from_nested(raw: RawNested) -> RawConfig {
        RawConfig {
            component_id: raw.component_id,
            connection: raw.resolved_connection.0,
            source: raw.config.0.source.map(|s| s.0).unwrap_or_default(),
            source_prefix: "config.source.",
            destination: raw.config.0.destination.map(|d| d.0).unwrap_or_default(),
            destination_prefix: "config.destination.",
            inputs: raw.inputs.map(|s| s.0),
            output: raw.output.map(|s| s.0),
            logging: raw.logging.map(|s| s.0),
            performance: raw.performance.map(|s| s.0),
        }
    }

    fn from_flat(raw: RawFlat) -> RawConfig {
        RawConfig {
            component_id: raw.component_id,
            connection: raw.resolved_connection.0,
            source: RawSource {
                data_type: raw.data_type,
                event_types: raw.event_types,
                lookback_window_minutes: raw.lookback_window_minutes,
                initial_since: raw.initial_since,
                page_size: raw.page_size,
                incremental_field: raw.incremental_field,
                deduplication_enabled: raw.deduplication_enabled,
                include_person_properties: raw.include_person_properties,
            },
            source_prefix: "",
            destination: RawDestination {
                table_name: raw.table_name,
                primary_key: raw.primary_key,
            },
            destination_prefix: "",
            inputs: raw.inputs.map(|s| s.0),
            output: raw.output.map(|s| s.0),
            logging: raw.logging.map(|s| s.0),
            performance: raw.performance.map(|s| s.0),
        }
    }
}

fn deserialize<T: for<'de> Deserialize<'de>>(value: Value) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| ConfigError::shape(&e))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}

/// JSON Schema (draft 2020-12) of the nested config, generated from [`RawNested`].
pub(crate) fn config_schema() -> Value {
    let schema = SchemaSettings::draft2020_12()
        .with(|s| s.inline_subschemas = true)
        .into_generator()
        .into_root_schema_for::<RawNested>();
    schema.to_value()
}
