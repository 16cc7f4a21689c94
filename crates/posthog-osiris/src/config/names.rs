//! The closed sets of names a config may use (`data_type`, `output.format`, …), each an enum
//! whose parsing, error messages, serialisation and JSON Schema all come from one list.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A name that is not one of the accepted values, e.g. `unknown region "mars"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {given:?} (expected {expected})")]
pub struct ParseNameError {
    what: &'static str,
    given: String,
    expected: String,
}

/// `a, b or c`: how the accepted names are listed in messages.
fn expected_list(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// Defines an enum of config names: `Variant = "name" | "alias"`. The first name is canonical
/// (what [`as_str`](DataType::as_str) returns and what is written out); aliases are accepted
/// when reading. The `#[default]` variant is the config's default.
macro_rules! name_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal $(| $alias:literal)* ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        // Not every enum uses every helper (the crate-private ones in particular).
        #[allow(dead_code)]
        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The canonical name, as written in config files and output.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($text $(| $alias)* => Some($name::$variant),)+
                    _ => None,
                }
            }

            fn expected() -> String {
                expected_list(&[$($text),+])
            }

            /// Every accepted spelling, canonical names and aliases.
            fn accepted() -> &'static [&'static str] {
                &[$($text, $($alias,)*)+]
            }
        }

        impl FromStr for $name {
            type Err = ParseNameError;

            fn from_str(name: &str) -> Result<Self, ParseNameError> {
                Self::from_name(name).ok_or_else(|| ParseNameError {
                    what: $what,
                    given: name.to_owned(),
                    expected: Self::expected(),
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct NameVisitor;

                impl Visitor<'_> for NameVisitor {
                    type Value = $name;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "one of {}", $name::expected())
                    }

                    fn visit_str<E: de::Error>(self, name: &str) -> Result<$name, E> {
                        name.parse().map_err(|e: ParseNameError| E::custom(e))
                    }
                }

                deserializer.deserialize_str(NameVisitor)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }

            fn inline_schema() -> bool {
                true
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "type": "string", "enum": $name::accepted() })
            }
        }
    };
}

name_enum! {
    /// What to extract: one PostHog resource, written as one table.
    pub enum DataType ("data type") {
        /// The event stream, read with HogQL and keyset pagination, incrementally.
        #[default]
        Events = "events",
        /// Persons and their properties.
        Persons = "persons",
        /// Cohort definitions.
        Cohorts = "cohorts",
        /// Feature flag definitions.
        FeatureFlags = "feature_flags",
        /// Saved insights.
        Insights = "insights",
        /// Annotations.
        Annotations = "annotations",
        /// Experiments.
        Experiments = "experiments",
        /// Sessions.
        Sessions = "sessions",
    }
}

impl DataType {
    /// Whether this type is extracted incrementally by default (events). The others are a
    /// full snapshot per run; persons may opt into incremental runs on `created_at`.
    pub const fn is_incremental(self) -> bool {
        matches!(self, DataType::Events)
    }

    /// The fields this type can be read incrementally on; empty for snapshot-only types.
    pub const fn incremental_fields(self) -> &'static [IncrementalField] {
        match self {
            DataType::Events => &[IncrementalField::Timestamp, IncrementalField::CreatedAt],
            DataType::Persons => &[IncrementalField::CreatedAt],
            _ => &[],
        }
    }

    /// The primary key columns used when the config names none: a column every row of the
    /// table has (sessions are keyed by `session_id`, the column they are paged on).
    pub const fn default_primary_key(self) -> &'static [&'static str] {
        match self {
            DataType::Events => &["uuid"],
            DataType::Sessions => &["session_id"],
            _ => &["id"],
        }
    }

    /// A one-line description of what the table holds.
    pub const fn description(self) -> &'static str {
        match self {
            DataType::Events => "PostHog events with flattened properties, deduplicated by UUID",
            DataType::Persons => "PostHog persons with flattened properties",
            DataType::Cohorts => "PostHog cohorts (user segments)",
            DataType::FeatureFlags => "PostHog feature flag definitions",
            DataType::Insights => "PostHog saved insights",
            DataType::Annotations => "PostHog annotations",
            DataType::Experiments => "PostHog experiments",
            DataType::Sessions => "PostHog sessions",
        }
    }
}

name_enum! {
    /// The column an incremental extraction orders and resumes on.
    pub enum IncrementalField ("incremental field") {
        /// The event's own (client-supplied) timestamp.
        #[default]
        Timestamp = "timestamp",
        /// The server's ingestion or creation time, immune to late client timestamps.
        CreatedAt = "created_at",
    }
}

name_enum! {
    /// The file format of the part files written for a table.
    pub enum OutputFormat ("output format") {
        /// Apache Parquet, zstd-compressed.
        #[default]
        Parquet = "parquet",
        /// JSON Lines: one JSON object per line.
        Jsonl = "jsonl",
        /// Comma-separated values with a header row.
        Csv = "csv",
    }
}

impl OutputFormat {
    /// The file name extension of a part file, without the dot.
    pub const fn extension(self) -> &'static str {
        self.as_str()
    }
}

name_enum! {
    /// How a table's parts are laid out in its directory.
    pub enum PartitionBy ("partitioning") {
        /// Every part at the top of the table's directory.
        #[default]
        None = "none",
        /// Hive-style `date=YYYY-MM-DD/` directories by the UTC date of the incremental
        /// field, which Spark, Trino, Athena, pyarrow and DuckDB (`hive_partitioning`) read.
        Day = "day",
    }
}

name_enum! {
    /// How much the component logs. `warning` (the seeds' spelling) is read as `warn`.
    pub enum LogLevel ("log level") {
        /// Errors only.
        Error = "error",
        /// Warnings and errors.
        Warn = "warn" | "warning",
        /// Progress and summaries.
        #[default]
        Info = "info",
        /// Per-request detail.
        Debug = "debug",
        /// Everything.
        Trace = "trace",
    }
}

name_enum! {
    /// Where the PostHog project lives, as named in `resolved_connection.region`.
    pub(crate) enum RegionName ("region") {
        /// PostHog Cloud US.
        #[default]
        Us = "us",
        /// PostHog Cloud EU.
        Eu = "eu",
        /// A self-hosted instance at `custom_base_url`.
        SelfHosted = "self_hosted",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_aliases_read_as_the_canonical_value() {
        for dt in DataType::ALL {
            assert_eq!(dt.as_str().parse::<DataType>(), Ok(*dt));
        }
        assert_eq!("warning".parse::<LogLevel>(), Ok(LogLevel::Warn));
        assert_eq!(LogLevel::Warn.as_str(), "warn");
    }

    #[test]
    fn unknown_name_lists_what_is_accepted() {
        let err = "mars".parse::<RegionName>().unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"unknown region "mars" (expected us, eu or self_hosted)"#
        );
    }
}
