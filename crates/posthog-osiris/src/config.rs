//! The extraction config: both seed shapes parsed, checked and brought to one validated
//! [`ExtractConfig`].
//!
//! Two stages: the document is read as YAML (JSON is YAML) and mapped onto raw serde structs
//! that deny unknown fields (the `raw` module), then every value is checked and defaulted
//! here. Nothing downstream sees an unchecked value. The first problem found is reported, as
//! one [`ConfigError`] naming the field as it is written in the document: serde's structural
//! errors first (keys in sorted order, as `serde_json` maps hold them), then the values in
//! document-layout order (connection, source, destination, output, logging, performance).
//!
//! | field | default | accepted |
//! |---|---|---|
//! | `resolved_connection.region` | `us` | `us`, `eu`, `self_hosted` |
//! | `source.data_type` | `events` | see [`DataType`] |
//! | `source.event_types` | `[]` (all) | events only; each 1–200 characters |
//! | `source.lookback_window_minutes` | 15 | 0..=10080 |
//! | `source.initial_since` | none (30 days ago) | RFC 3339 timestamp |
//! | `source.page_size` | 1000 | 100..=50000 |
//! | `source.incremental_field` | `timestamp` for events, none (snapshot) otherwise | events: `timestamp`, `created_at`; persons: `created_at` |
//! | `source.deduplication_enabled` | true | |
//! | `source.include_person_properties` | true for events | events only |
//! | `destination.table_name` | `posthog_<data_type>` | `^[A-Za-z_][A-Za-z0-9_]{0,127}$` |
//! | `destination.primary_key` | `[uuid]` for events, `[session_id]` for sessions, `[id]` otherwise | non-empty names |
//! | `output.format` | `parquet` | `parquet`, `jsonl`, `csv` |
//! | `output.part_rows` | 1000000 | 1000..=100000000 |
//! | `output.flatten_properties` | true | |
//! | `output.max_columns` | 1000 | 16..=10000 |
//! | `output.location` | none (`--output-dir`, else `./posthog-output`) | a path, `s3://`, `gs://`, `az://`, `abfss://`, `file://` URL |
//! | `output.partition_by` | `none` | `none`, `day` (incremental tables) |
//! | `output.storage.endpoint` / `region` / `allow_http` | none (the environment's) | |
//! | `output.storage.lease_seconds` | 60 | 5..=3600 |
//! | `logging.level` / `verbose_http` | `info` / false | `error`, `warn` (`warning`), `info`, `debug`, `trace` |
//! | `performance.batch_size` | 5000 | 100..=1000000 |
//! | `performance.request_timeout` (s) | 30 | 1..=600 |
//! | `performance.pool_size` | 4 | 1..=64 |
//! | `performance.query_concurrency` | 3 | 1..=3 |
//! | `performance.query_requests_per_minute` | 240 | 1..=100000 |
//! | `performance.query_requests_per_hour` | 2400 | 1..=6000000 |
//! | `performance.retries.max_attempts` | 3 | 1..=20 |
//! | `performance.retries.backoff_factor` | 1.0 | finite, 0.0..=60.0 |
//! | `performance.retries.timeout_seconds` | 30 | 1..=3600 |

mod error;
mod names;
pub(crate) mod raw;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use posthog_client::Region;
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use error::ConfigError;
pub use names::{DataType, IncrementalField, LogLevel, OutputFormat, ParseNameError, PartitionBy};

use error::API_KEY_FIELD;
use names::RegionName;
use raw::{IntBounds, RawConfig};

/// A validated extraction config: every value checked and every default applied.
///
/// `Debug` never shows the API key (it prints as `[REDACTED]`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ExtractConfig {
    /// `component_id`; `posthog/osiris` unless the document says otherwise.
    pub component_id: String,
    /// `resolved_connection`: where PostHog is and how to authenticate.
    pub connection: Connection,
    /// `config.source` (or the flat shape's top-level keys): what to read.
    pub source: SourceConfig,
    /// `config.destination`: the table the rows become.
    pub destination: DestinationConfig,
    /// `inputs.state`: per table name, the state a previous run left, kept as written (the
    /// state crate interprets it). Seeds the state store when it has no entry for the table.
    pub inputs_state: BTreeMap<String, serde_json::Value>,
    /// `output`: the part files' format.
    pub output: OutputConfig,
    /// `logging`.
    pub logging: LoggingConfig,
    /// `performance`: batching, timeouts, connections, retries.
    pub performance: PerformanceConfig,
}

/// `resolved_connection`: credentials, project and region.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Connection {
    /// The personal API key, when the config carries one. The CLI supplies it otherwise (from
    /// `--api-key-file` or the environment) through [`Connection::with_api_key`].
    pub api_key: Option<SecretString>,
    /// The numeric project ID, as digits.
    pub project_id: String,
    /// The region; `custom_base_url` is folded into [`Region::SelfHosted`].
    pub region: Region,
}

/// `config.source`: what to read from PostHog.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SourceConfig {
    /// The resource extracted.
    pub data_type: DataType,
    /// Event names to extract (events only); empty means all events.
    pub event_types: Vec<String>,
    /// Minutes re-read before the watermark on incremental runs.
    pub lookback_window_minutes: u32,
    /// Where the first run starts; `None` means 30 days before the run.
    pub initial_since: Option<OffsetDateTime>,
    /// Rows requested per API call.
    pub page_size: u32,
    /// The column incremental runs resume on; `None` means a full snapshot every run
    /// (the default for every type but events).
    pub incremental_field: Option<IncrementalField>,
    /// Drop rows whose UUID was already emitted inside the lookback window.
    pub deduplication_enabled: bool,
    /// Events only: select the person's properties as of event time (`person.properties`)
    /// next to the event's own.
    pub include_person_properties: bool,
}

/// `config.destination`: the table written.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DestinationConfig {
    /// Table name, also the name of its output directory; matches
    /// `^[A-Za-z_][A-Za-z0-9_]{0,127}$`.
    pub table_name: String,
    /// Primary key columns; never empty.
    pub primary_key: Vec<String>,
}

/// `output`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutputConfig {
    /// Where the tables land (`output.location`), when the config says; the CLI's
    /// `--output-dir` overrides it.
    pub location: Option<posthog_storage::Location>,
    /// How parts are laid out in a table's directory (default: all at its top).
    pub partition_by: PartitionBy,
    /// Non-secret options of an object-store location.
    pub storage: StorageConfig,
    /// Format of the part files (default Parquet).
    pub format: OutputFormat,
    /// Rows between checkpoints (default 1 000 000). At the first page boundary after this many
    /// rows were written since the last checkpoint the open part is closed and the state
    /// committed, so a crash loses at most `part_rows + page_size - 1` rows' work and a part
    /// holds at most that many. Parts may close earlier (a Parquet footer at its column-chunk
    /// budget, a column added); they count towards `part_rows` and are committed at the next
    /// checkpoint.
    pub part_rows: u64,
    /// Whether `properties` and `person_properties` become one column per key
    /// (`properties_<key>`, the default) or stay one JSON text column each.
    pub flatten_properties: bool,
    /// Columns a table may have (default 1 000). Once it has this many, a property key seen
    /// for the first time gets no column of its own: its values go, with those of every other
    /// such key of the row, into `properties__rest` (or `person_properties__rest`) as one
    /// JSON object, so nothing is lost, memory stays bounded and readers get a usable schema.
    pub max_columns: usize,
}

/// `output.storage`: what an object-store location needs besides credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StorageConfig {
    /// The store's endpoint (S3-compatible servers), over the environment's.
    pub endpoint: Option<String>,
    /// The bucket's region, over the environment's.
    pub region: Option<String>,
    /// Whether a plain `http://` endpoint is allowed, over the environment's.
    pub allow_http: Option<bool>,
    /// How long a table's lease lasts unless renewed (default 60 s).
    pub lease: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            endpoint: None,
            region: None,
            allow_http: None,
            lease: Duration::from_secs(default_of::<u64>(&raw::LEASE_SECONDS)),
        }
    }
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            location: None,
            partition_by: PartitionBy::None,
            storage: StorageConfig::default(),
            format: OutputFormat::default(),
            part_rows: default_of(&raw::PART_ROWS),
            flatten_properties: true,
            max_columns: default_of(&raw::MAX_COLUMNS),
        }
    }
}

/// `logging`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct LoggingConfig {
    /// Log level (default `info`).
    pub level: LogLevel,
    /// Log each HTTP request and response, keys redacted (default false).
    pub verbose_http: bool,
}

/// `performance`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct PerformanceConfig {
    /// Rows buffered before a record batch is written.
    pub batch_size: usize,
    /// Timeout of one HTTP request (`request_timeout`, seconds).
    pub request_timeout: Duration,
    /// Concurrent HTTP connections.
    pub pool_size: usize,
    /// Keyset scans (and so `/query` requests) a run keeps in flight at once: slices of the
    /// run's time range read concurrently (PostHog runs at most 3 queries per project at once).
    pub query_concurrency: usize,
    /// Client-side budget of `/query` requests per minute.
    pub query_requests_per_minute: u32,
    /// Client-side budget of `/query` requests per hour.
    pub query_requests_per_hour: u32,
    /// Retries of retryable failures.
    pub retries: RetryConfig,
}

/// `performance.retries`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// Base of the exponential backoff, in seconds; finite, within `0.0..=60.0`.
    pub backoff_factor: f64,
    /// Total time allowed for one request and its retries (`timeout_seconds`).
    pub timeout: Duration,
}

impl Default for PerformanceConfig {
    fn default() -> Self {
        PerformanceConfig {
            batch_size: default_of(&raw::BATCH_SIZE),
            request_timeout: Duration::from_secs(default_of(&raw::REQUEST_TIMEOUT)),
            pool_size: default_of(&raw::POOL_SIZE),
            query_concurrency: default_of(&raw::QUERY_CONCURRENCY),
            query_requests_per_minute: default_of(&raw::QUERY_PER_MINUTE),
            query_requests_per_hour: default_of(&raw::QUERY_PER_HOUR),
            retries: RetryConfig::default(),
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: default_of(&raw::MAX_ATTEMPTS),
            backoff_factor: raw::BACKOFF_FACTOR_DEFAULT,
            timeout: Duration::from_secs(default_of(&raw::RETRY_TIMEOUT_SECONDS)),
        }
    }
}

/// A bound's default as the model's type. The defaults are small positive constants that fit
/// every type they are read as (`consts_fit_their_types` checks it), so the fallback is unused.
fn default_of<T: TryFrom<i64> + Default>(bounds: &IntBounds) -> T {
    T::try_from(bounds.default).unwrap_or_default()
}

impl ExtractConfig {
    /// Parses and validates a config in either seed shape, written as YAML or JSON.
    pub fn from_yaml_str(text: &str) -> Result<ExtractConfig, ConfigError> {
        ExtractConfig::from_value(raw::parse_yaml(text)?)
    }

    /// Reads, parses and validates a config file. An error about the file as a whole (it
    /// cannot be read, is not YAML, is not a mapping) is reported on the file's path as given
    /// (`config.yaml: cannot read the file: No such file or directory (os error 2)`); an error
    /// in a value names the value's field, as [`from_yaml_str`](Self::from_yaml_str) does.
    pub fn from_path(path: &Path) -> Result<ExtractConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                path.display().to_string(),
                format!("cannot read the file: {e}"),
            )
        })?;
        ExtractConfig::from_yaml_str(&text).map_err(|e| e.in_file(path))
    }

    /// Validates a config already parsed into JSON (as the Osiris runtime may hand it over).
    pub fn from_value(value: serde_json::Value) -> Result<ExtractConfig, ConfigError> {
        validate(RawConfig::from_value(value)?)
    }
}

impl Connection {
    /// Sets the API key supplied outside the config (a secret file, the environment),
    /// replacing any the config had. The key is checked as a config key is: not empty, no
    /// whitespace, not a project key (`phc_…`) or secret key (`phs_…`), which cannot read
    /// data. Errors name the field `api_key` and never contain the key.
    pub fn with_api_key(mut self, key: SecretString) -> Result<Connection, ConfigError> {
        check_api_key(&key).map_err(|message| ConfigError::new("api_key", message))?;
        self.api_key = Some(key);
        Ok(self)
    }
}

fn validate(raw: RawConfig) -> Result<ExtractConfig, ConfigError> {
    let component_id = component_id(raw.component_id)?;
    let connection = connection(raw.connection)?;
    let source = SourceRules {
        prefix: raw.source_prefix,
    }
    .check(raw.source)?;
    let destination = destination(raw.destination, raw.destination_prefix, source.data_type)?;
    let inputs_state = raw.inputs.and_then(|i| i.state).unwrap_or_default();
    let output = match raw.output {
        None => OutputConfig::default(),
        Some(o) => output(o, &source)?,
    };
    let logging = raw
        .logging
        .map_or_else(LoggingConfig::default, |l| LoggingConfig {
            level: l.level.unwrap_or_default(),
            verbose_http: l.verbose_http.unwrap_or(false),
        });
    let performance = match raw.performance {
        Some(p) => performance(p)?,
        None => PerformanceConfig::default(),
    };
    Ok(ExtractConfig {
        component_id,
        connection,
        source,
        destination,
        inputs_state,
        output,
        logging,
        performance,
    })
}

fn output(o: raw::RawOutput, source: &SourceConfig) -> Result<OutputConfig, ConfigError> {
    let location = match o.location {
        None => None,
        Some(text) => Some(
            posthog_storage::Location::parse(&text)
                .map_err(|e| ConfigError::new("output.location", e.to_string()))?,
        ),
    };
    let partition_by = o.partition_by.unwrap_or_default();
    if partition_by == PartitionBy::Day && source.incremental_field.is_none() {
        return Err(ConfigError::new(
            "output.partition_by",
            format!(
                "day partitions by the incremental field's date; {} is extracted as a snapshot, \
                 which has none: leave partition_by out or set it to none",
                source.data_type
            ),
        ));
    }
    let storage = match o.storage {
        None => StorageConfig::default(),
        Some(st) => StorageConfig {
            endpoint: st.endpoint,
            region: st.region,
            allow_http: st.allow_http,
            lease: Duration::from_secs(int_in(
                "output.storage.lease_seconds",
                st.lease_seconds,
                &raw::LEASE_SECONDS,
            )?),
        },
    };
    Ok(OutputConfig {
        location,
        partition_by,
        storage,
        format: o.format.unwrap_or_default(),
        part_rows: int_in("output.part_rows", o.part_rows, &raw::PART_ROWS)?,
        flatten_properties: o.flatten_properties.unwrap_or(true),
        max_columns: int_in("output.max_columns", o.max_columns, &raw::MAX_COLUMNS)?,
    })
}

fn component_id(raw: Option<String>) -> Result<String, ConfigError> {
    match raw {
        None => Ok(raw::COMPONENT_ID.to_owned()),
        Some(id) if id.trim().is_empty() => Err(ConfigError::new("component_id", "is empty")),
        Some(id) => Ok(id),
    }
}

fn connection(raw: raw::RawConnection) -> Result<Connection, ConfigError> {
    let api_key = match raw.api_key {
        None => None,
        Some(raw::RawApiKey(key)) => {
            check_api_key(&key).map_err(|message| ConfigError::new(API_KEY_FIELD, message))?;
            Some(key)
        }
    };
    let project_id = raw.project_id.0;
    if project_id.is_empty() || !project_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConfigError::new(
            "resolved_connection.project_id",
            format!("{project_id:?} is not a numeric project ID"),
        ));
    }
    let region = region(raw.region.unwrap_or_default(), raw.custom_base_url)?;
    Ok(Connection {
        api_key,
        project_id,
        region,
    })
}

/// Why a key cannot be used, in words that never include the key.
fn check_api_key(key: &SecretString) -> Result<(), &'static str> {
    let key = key.expose_secret();
    if key.is_empty() {
        return Err("is empty");
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace or control characters (the value is not shown)");
    }
    if key.starts_with("phc_") {
        return Err(
            "is a project API key (phc_...), which can only send events; \
             use a personal API key (phx_...) with read access",
        );
    }
    if key.starts_with("phs_") {
        return Err(
            "is a project secret key (phs_...), which cannot read data; \
             use a personal API key (phx_...) with read access",
        );
    }
    Ok(())
}

fn region(name: RegionName, custom_base_url: Option<String>) -> Result<Region, ConfigError> {
    const FIELD: &str = "resolved_connection.custom_base_url";
    match (name, custom_base_url) {
        (RegionName::SelfHosted, None) => Err(ConfigError::new(
            FIELD,
            "missing (required with region self_hosted)",
        )),
        (RegionName::SelfHosted, Some(url)) => {
            Region::self_hosted(&url).map_err(|e| ConfigError::new(FIELD, client_message(e)))
        }
        (cloud, Some(_)) => Err(ConfigError::new(
            FIELD,
            format!("only allowed with region self_hosted (region is {cloud})"),
        )),
        (RegionName::Us, None) => Ok(Region::Us),
        (RegionName::Eu, None) => Ok(Region::Eu),
    }
}

/// The message of a `posthog-client` config error, without its own `field:` prefix.
fn client_message(err: posthog_client::Error) -> String {
    match err {
        posthog_client::Error::Config { message, .. } => message,
        other => other.to_string(),
    }
}

/// Checks `config.source`, naming fields with the shape's prefix.
struct SourceRules {
    prefix: &'static str,
}

impl SourceRules {
    fn field(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn check(&self, raw: raw::RawSource) -> Result<SourceConfig, ConfigError> {
        let data_type = raw.data_type.unwrap_or_default();
        let event_types = self.event_types(raw.event_types.unwrap_or_default(), data_type)?;
        let lookback_window_minutes = int_in(
            &self.field("lookback_window_minutes"),
            raw.lookback_window_minutes,
            &raw::LOOKBACK_WINDOW_MINUTES,
        )?;
        let initial_since = match raw.initial_since {
            None => None,
            Some(text) => Some(timestamp(&self.field("initial_since"), &text)?),
        };
        let page_size = int_in(&self.field("page_size"), raw.page_size, &raw::PAGE_SIZE)?;
        let incremental_field = self.incremental_field(raw.incremental_field, data_type)?;
        Ok(SourceConfig {
            data_type,
            event_types,
            lookback_window_minutes,
            initial_since,
            page_size,
            incremental_field,
            deduplication_enabled: raw.deduplication_enabled.unwrap_or(true),
            include_person_properties: self
                .include_person_properties(raw.include_person_properties, data_type)?,
        })
    }

    fn include_person_properties(
        &self,
        given: Option<bool>,
        data_type: DataType,
    ) -> Result<bool, ConfigError> {
        match given {
            None => Ok(data_type == DataType::Events),
            Some(include) if data_type == DataType::Events => Ok(include),
            Some(_) => Err(ConfigError::new(
                self.field("include_person_properties"),
                format!(
                    "only valid with data_type events ({data_type} rows carry no person \
                     properties of their own)"
                ),
            )),
        }
    }

    fn event_types(
        &self,
        event_types: Vec<String>,
        data_type: DataType,
    ) -> Result<Vec<String>, ConfigError> {
        let field = self.field("event_types");
        if !event_types.is_empty() && data_type != DataType::Events {
            return Err(ConfigError::new(
                field,
                format!("only valid with data_type events (data_type is {data_type})"),
            ));
        }
        for (i, name) in event_types.iter().enumerate() {
            let chars = name.chars().count();
            if chars == 0 {
                return Err(ConfigError::new(format!("{field}[{i}]"), "is empty"));
            }
            if chars > raw::EVENT_TYPE_MAX_CHARS {
                return Err(ConfigError::new(
                    format!("{field}[{i}]"),
                    format!(
                        "is {chars} characters long (at most {} allowed)",
                        raw::EVENT_TYPE_MAX_CHARS
                    ),
                ));
            }
        }
        Ok(event_types)
    }

    fn incremental_field(
        &self,
        given: Option<IncrementalField>,
        data_type: DataType,
    ) -> Result<Option<IncrementalField>, ConfigError> {
        let Some(field) = given else {
            return Ok(data_type
                .is_incremental()
                .then_some(IncrementalField::Timestamp));
        };
        if data_type.incremental_fields().contains(&field) {
            return Ok(Some(field));
        }
        let message = match data_type {
            DataType::Persons => format!(
                "{field} is not available for persons (use created_at, or leave it out \
                 for a full snapshot)"
            ),
            _ => format!(
                "only valid with data_type events or persons ({data_type} is extracted as a \
                 full snapshot)"
            ),
        };
        Err(ConfigError::new(self.field("incremental_field"), message))
    }
}

fn timestamp(field: &str, text: &str) -> Result<OffsetDateTime, ConfigError> {
    OffsetDateTime::parse(text, &Rfc3339).map_err(|e| {
        ConfigError::new(
            field,
            format!(
                "{text:?} is not an RFC 3339 timestamp ({e}); \
                 expected the form 2025-11-01T00:00:00Z"
            ),
        )
    })
}

/// The value (or the default) if it lies within the bounds; the message quotes the bounds.
fn int_in<T: TryFrom<i128>>(
    field: &str,
    value: Option<i128>,
    bounds: &IntBounds,
) -> Result<T, ConfigError> {
    let value = value.unwrap_or(i128::from(bounds.default));
    let in_range = (i128::from(bounds.min)..=i128::from(bounds.max)).contains(&value);
    match T::try_from(value) {
        Ok(v) if in_range => Ok(v),
        _ => Err(ConfigError::new(
            field,
            format!("{value} is out of range {}..={}", bounds.min, bounds.max),
        )),
    }
}

fn destination(
    raw: raw::RawDestination,
    prefix: &str,
    data_type: DataType,
) -> Result<DestinationConfig, ConfigError> {
    let table_name = raw
        .table_name
        .unwrap_or_else(|| format!("posthog_{data_type}"));
    if !is_table_name(&table_name) {
        return Err(ConfigError::new(
            format!("{prefix}table_name"),
            format!(
                "{table_name:?} is not a valid table name (1 to 128 ASCII letters, digits or _, \
                 not starting with a digit; it becomes a directory name)"
            ),
        ));
    }
    let primary_key = match raw.primary_key {
        None => data_type
            .default_primary_key()
            .iter()
            .map(|c| (*c).to_owned())
            .collect(),
        Some(columns) => columns,
    };
    let field = format!("{prefix}primary_key");
    if primary_key.is_empty() {
        return Err(ConfigError::new(
            field,
            "is empty (name at least one column)",
        ));
    }
    for (i, column) in primary_key.iter().enumerate() {
        if column.trim().is_empty() {
            return Err(ConfigError::new(format!("{field}[{i}]"), "is empty"));
        }
        if primary_key[..i].contains(column) {
            return Err(ConfigError::new(
                format!("{field}[{i}]"),
                format!("{column:?} is listed twice"),
            ));
        }
    }
    Ok(DestinationConfig {
        table_name,
        primary_key,
    })
}

/// `^[A-Za-z_][A-Za-z0-9_]{0,127}$`, without a regex engine.
fn is_table_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let starts_well = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    starts_well && name.len() <= 128 && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn performance(raw: raw::RawPerformance) -> Result<PerformanceConfig, ConfigError> {
    const P: &str = "performance";
    let batch_size = int_in(&format!("{P}.batch_size"), raw.batch_size, &raw::BATCH_SIZE)?;
    let request_timeout: u64 = int_in(
        &format!("{P}.request_timeout"),
        raw.request_timeout,
        &raw::REQUEST_TIMEOUT,
    )?;
    let pool_size = int_in(&format!("{P}.pool_size"), raw.pool_size, &raw::POOL_SIZE)?;
    let query_concurrency = int_in(
        &format!("{P}.query_concurrency"),
        raw.query_concurrency,
        &raw::QUERY_CONCURRENCY,
    )?;
    let query_requests_per_minute = int_in(
        &format!("{P}.query_requests_per_minute"),
        raw.query_requests_per_minute,
        &raw::QUERY_PER_MINUTE,
    )?;
    let query_requests_per_hour = int_in(
        &format!("{P}.query_requests_per_hour"),
        raw.query_requests_per_hour,
        &raw::QUERY_PER_HOUR,
    )?;
    let retries = match raw.retries {
        None => RetryConfig::default(),
        Some(r) => retries(r.0)?,
    };
    Ok(PerformanceConfig {
        batch_size,
        request_timeout: Duration::from_secs(request_timeout),
        pool_size,
        query_concurrency,
        query_requests_per_minute,
        query_requests_per_hour,
        retries,
    })
}

fn retries(raw: raw::RawRetries) -> Result<RetryConfig, ConfigError> {
    const R: &str = "performance.retries";
    let max_attempts = int_in(
        &format!("{R}.max_attempts"),
        raw.max_attempts,
        &raw::MAX_ATTEMPTS,
    )?;
    let backoff_factor = raw.backoff_factor.unwrap_or(raw::BACKOFF_FACTOR_DEFAULT);
    if !backoff_factor.is_finite() || !(0.0..=raw::BACKOFF_FACTOR_MAX).contains(&backoff_factor) {
        return Err(ConfigError::new(
            format!("{R}.backoff_factor"),
            format!(
                "{backoff_factor} is out of range 0.0..={:.1}",
                raw::BACKOFF_FACTOR_MAX
            ),
        ));
    }
    let timeout_seconds: u64 = int_in(
        &format!("{R}.timeout_seconds"),
        raw.timeout_seconds,
        &raw::RETRY_TIMEOUT_SECONDS,
    )?;
    Ok(RetryConfig {
        max_attempts,
        backoff_factor,
        timeout: Duration::from_secs(timeout_seconds),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consts_fit_their_types() {
        let defaults = PerformanceConfig::default();
        assert_eq!(defaults.batch_size, 5000);
        assert_eq!(defaults.request_timeout, Duration::from_secs(30));
        assert_eq!(defaults.pool_size, 4);
        assert_eq!(defaults.query_concurrency, 3);
        assert_eq!(defaults.retries.max_attempts, 3);
        assert_eq!(defaults.retries.timeout, Duration::from_secs(30));
    }

    #[test]
    fn table_name_rule_matches_the_documented_pattern() {
        for ok in ["posthog_events", "_x", "A", &"a".repeat(128)] {
            assert!(is_table_name(ok), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "../x",
            "a/b",
            "a.b",
            "a-b",
            "a b",
            &"a".repeat(129),
            "é",
        ] {
            assert!(!is_table_name(bad), "{bad}");
        }
    }

    #[test]
    fn int_in_reports_the_value_and_the_bounds() {
        let err = int_in::<u32>("f", Some(-1), &raw::PAGE_SIZE).unwrap_err();
        assert_eq!(err.to_string(), "f: -1 is out of range 100..=50000");
        assert_eq!(int_in::<u32>("f", None, &raw::PAGE_SIZE), Ok(1000));
    }
}
