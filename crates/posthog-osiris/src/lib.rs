//! The `posthog/osiris` component: extracts PostHog data for the Osiris runtime and the
//! `posthog-cli` binary.
//!
//! - [`ExtractConfig`] reads a config in either seed shape (the canonical nested one with
//!   `config.source` / `config.destination`, or the older flat one), YAML or JSON, and
//!   validates every value before anything is requested. A problem is one [`ConfigError`]
//!   naming the field: `config.source.page_size: 70000 is out of range 100..=50000`.
//! - [`component_spec`] describes the component: modes, capabilities, data types, output
//!   formats and the JSON Schema of its config.
//! - [`PostHogDriver`] implements the Osiris [`Driver`] contract: [`Driver::discover`],
//!   [`Driver::doctor`] and [`Driver::run`], the incremental, exactly-once extraction of one
//!   table into part files under [`Context::base_path`], with its state in a
//!   [`posthog_state::StateStore`]. `docs/ARCHITECTURE.md` describes a run's data flow and its
//!   commit protocol.
//!
//! The crate reads no environment variables and prints nothing; credentials arrive in
//! `resolved_connection` (or through [`Connection::with_api_key`]) and never appear in `Debug`
//! output or errors.
//!
//! ```
//! use posthog_osiris::{DataType, ExtractConfig};
//!
//! let config = ExtractConfig::from_yaml_str(
//!     r#"
//! resolved_connection: {api_key: phx_example, project_id: "12345", region: eu}
//! config:
//!   source: {data_type: events, page_size: 2000}
//! "#,
//! )?;
//! assert_eq!(config.source.data_type, DataType::Events);
//! assert_eq!(config.destination.table_name, "posthog_events");
//! assert!(!format!("{config:?}").contains("phx_example"));
//! # Ok::<(), posthog_osiris::ConfigError>(())
//! ```

pub mod config;
pub mod driver;
mod engine;
mod error;
pub mod spec;

pub use config::{
    ConfigError, Connection, DataType, DestinationConfig, ExtractConfig, IncrementalField,
    LogLevel, LoggingConfig, OutputConfig, OutputFormat, ParseNameError, PartitionBy,
    PerformanceConfig, RetryConfig, SourceConfig, StorageConfig,
};
pub use driver::{
    Context, DiscoveredResource, Discovery, DoctorReport, Driver, Field, Observer, PostHogDriver,
    Progress, RunStatus, RunSummary, StateSummary,
};
pub use engine::connect;
pub use error::DriverError;
pub use posthog_error::{Categorized, Category};
pub use spec::{
    Capabilities, ComponentSpec, DataTypeSpec, ExtractionMode, Mode, OutputFormatSpec,
    component_spec,
};
