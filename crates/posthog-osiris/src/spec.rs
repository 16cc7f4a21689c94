//! The component spec: what `posthog/osiris` is, what it can do, and the JSON Schema of its
//! config, for the Osiris runtime and for agents to read before they write a config.

use serde::Serialize;

use crate::config::raw::{COMPONENT_ID, config_schema};
use crate::config::{DataType, IncrementalField, OutputFormat};

/// The description of the component, as [`component_spec`] returns it.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ComponentSpec {
    /// The component's name: `posthog/osiris`.
    pub name: &'static str,
    /// This crate's version.
    pub version: &'static str,
    /// One sentence on what the component does.
    pub description: &'static str,
    /// The modes the driver runs in.
    pub modes: Vec<Mode>,
    /// What the component supports, in the Osiris capability vocabulary.
    pub capabilities: Capabilities,
    /// The resources it extracts.
    pub data_types: Vec<DataTypeSpec>,
    /// The file formats it writes.
    pub output_formats: Vec<OutputFormatSpec>,
    /// JSON pointers of config values that are secrets, for the runtime to mask.
    pub secrets: Vec<&'static str>,
    /// JSON Schema (draft 2020-12) of the nested config shape.
    pub config_schema: serde_json::Value,
}

/// A mode the driver runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Mode {
    /// Extract one table into part files, advancing its state (`run`).
    Extract,
    /// List the resources available, with their schemas and a stable fingerprint.
    Discover,
    /// Check the connection and credentials within a short timeout.
    Doctor,
}

/// The Osiris capability table of the seed, corrected to what this component does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Capabilities {
    /// Lists the available resources (`discover` mode).
    pub discover: bool,
    /// Checks connection and credentials (`doctor` mode).
    pub doctor: bool,
    /// Resumes events from a watermark with a lookback window instead of re-reading all.
    pub incremental: bool,
    /// Streams pages to part files with memory bounded by page and batch sizes.
    pub streaming: bool,
    /// Keeps state between runs (watermark, tie-breaker UUID, recent UUIDs, columns).
    pub state: bool,
    /// Drops events re-read inside the lookback window by UUID.
    pub deduplication: bool,
    /// Full extraction across many pages (snapshots and first runs).
    pub bulk_operations: bool,
    /// Ad hoc analytics queries: not part of the component (the CLI's `query` serves agents).
    pub ad_hoc_analytics: bool,
    /// In-memory transfer to another component: no, output is files.
    pub in_memory_move: bool,
    /// Transactions against the source: no, PostHog is only read.
    pub transactions: bool,
    /// Server-side partitioned reads: no, one keyset-paginated stream.
    pub partitioning: bool,
    /// User-defined transforms: no; rows are only flattened, without losing any value.
    pub custom_transforms: bool,
}

/// How a data type is extracted by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ExtractionMode {
    /// From a watermark, appending new part files.
    Incremental,
    /// The whole resource each run, replacing the table's previous parts atomically.
    Snapshot,
}

/// One resource the component extracts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DataTypeSpec {
    /// Its `data_type` name.
    pub name: DataType,
    /// What the table holds.
    pub description: &'static str,
    /// How it is extracted when the config does not choose.
    pub default_mode: ExtractionMode,
    /// The `incremental_field` values it accepts; empty for snapshot-only types.
    pub incremental_fields: Vec<IncrementalField>,
    /// The default table name, `posthog_<data_type>`.
    pub default_table_name: String,
    /// The default primary key columns.
    pub default_primary_key: Vec<&'static str>,
}

/// One output file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct OutputFormatSpec {
    /// Its `output.format` name.
    pub name: OutputFormat,
    /// The part files' extension, without the dot.
    pub extension: &'static str,
}

/// The spec of the `posthog/osiris` component.
///
/// ```
/// let spec = posthog_osiris::component_spec();
/// assert_eq!(spec.name, "posthog/osiris");
/// assert!(spec.capabilities.incremental);
/// let json = serde_json::to_value(&spec).unwrap();
/// assert!(json["config_schema"]["properties"]["resolved_connection"].is_object());
/// ```
pub fn component_spec() -> ComponentSpec {
    ComponentSpec {
        name: COMPONENT_ID,
        version: env!("CARGO_PKG_VERSION"),
        description: "Extracts PostHog events incrementally (exactly once, deduplicated by UUID) \
                      and persons, cohorts, feature flags, insights, annotations, experiments \
                      and sessions as snapshots, into Parquet, JSONL or CSV part files.",
        modes: vec![Mode::Extract, Mode::Discover, Mode::Doctor],
        capabilities: Capabilities {
            discover: true,
            doctor: true,
            incremental: true,
            streaming: true,
            state: true,
            deduplication: true,
            bulk_operations: true,
            ad_hoc_analytics: false,
            in_memory_move: false,
            transactions: false,
            partitioning: false,
            custom_transforms: false,
        },
        data_types: DataType::ALL.iter().map(|dt| data_type_spec(*dt)).collect(),
        output_formats: OutputFormat::ALL
            .iter()
            .map(|f| OutputFormatSpec {
                name: *f,
                extension: f.extension(),
            })
            .collect(),
        secrets: vec!["/resolved_connection/api_key"],
        config_schema: config_schema(),
    }
}

fn data_type_spec(data_type: DataType) -> DataTypeSpec {
    DataTypeSpec {
        name: data_type,
        description: data_type.description(),
        default_mode: if data_type.is_incremental() {
            ExtractionMode::Incremental
        } else {
            ExtractionMode::Snapshot
        },
        incremental_fields: data_type.incremental_fields().to_vec(),
        default_table_name: format!("posthog_{data_type}"),
        default_primary_key: data_type.default_primary_key().to_vec(),
    }
}
