//! What a run reads for each data type: the HogQL keyset scans (events, persons, sessions) and the REST
//! snapshots (cohorts, feature flags, insights, annotations, experiments), with the columns
//! each one declares.

use posthog_client::{KeysetFilter, KeysetQuery, Resource};
use posthog_core::{ColumnType, FieldSpec, UnixMicros};

use crate::{ConfigError, DataType, ExtractConfig, IncrementalField};

/// Where a table's rows come from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// A HogQL scan ordered by a keyset.
    Keyset(KeysetScan),
    /// A DRF-paginated REST list, read whole.
    Rest(Resource),
}

/// A HogQL keyset scan: `SELECT <fields> FROM <table> WHERE <after cursor> ORDER BY <keys>`.
#[derive(Debug, Clone)]
pub(crate) struct KeysetScan {
    /// `events` or `persons`.
    pub table: &'static str,
    /// Selected fields, in select order; the batch builder gets them in the same order.
    pub fields: Vec<FieldSpec>,
    /// The time column of the keyset (`timestamp`, `created_at`), or `None` to page on the id
    /// alone (a persons snapshot).
    pub time_column: Option<&'static str>,
    /// The unique id column, the keyset's last element (`uuid`, `id`).
    pub id_column: &'static str,
    /// Whether the id column is a ClickHouse UUID (compared in UUID order through `toUUID`)
    /// rather than text holding a UUID (sessions' `session_id`, compared as a string).
    pub id_is_uuid: bool,
    /// Event names to keep (events only); empty for all.
    pub event_types: Vec<String>,
    /// A fixed lower bound on a time column that every page repeats (the sessions snapshot
    /// covers sessions started since `initial_since`, else the last 30 days).
    pub since: Option<(&'static str, UnixMicros)>,
    /// The last instant of the time column to read, inclusive (a repair reads a closed range);
    /// `None` reads to the end.
    pub until: Option<UnixMicros>,
    /// The instant a slice of the run's range ends before (exclusive); `None` reads to the end.
    pub before: Option<UnixMicros>,
}

/// Where a keyset page starts, and a keyset position: the client's pager types.
pub(crate) use posthog_client::{KeysetCursor as Cursor, KeysetStart as Start};

impl Source {
    /// The source a config asks for.
    /// `now` places the default window of a sessions snapshot.
    pub(crate) fn for_config(
        config: &ExtractConfig,
        now: UnixMicros,
    ) -> Result<Source, ConfigError> {
        let field = config.source.incremental_field;
        Ok(match config.source.data_type {
            DataType::Events => Source::Keyset(KeysetScan {
                table: "events",
                fields: event_fields(config.source.include_person_properties),
                time_column: Some(match field {
                    Some(IncrementalField::CreatedAt) => "created_at",
                    _ => "timestamp",
                }),
                id_column: "uuid",
                id_is_uuid: true,
                event_types: config.source.event_types.clone(),
                since: None,
                until: None,
                before: None,
            }),
            DataType::Persons => Source::Keyset(KeysetScan {
                table: "persons",
                fields: person_fields(),
                time_column: field.map(|_| "created_at"),
                id_column: "id",
                id_is_uuid: true,
                event_types: Vec::new(),
                since: None,
                until: None,
                before: None,
            }),
            DataType::Sessions => {
                if field.is_some() {
                    return Err(ConfigError::new(
                        "config.source.incremental_field",
                        "sessions are extracted as a snapshot (sessions change until they end); \
                         remove incremental_field",
                    ));
                }
                let since = match config.source.initial_since {
                    Some(at) => i64::try_from(at.unix_timestamp_nanos() / 1000).unwrap_or(i64::MIN),
                    None => now - DEFAULT_SESSIONS_WINDOW_MICROS,
                };
                Source::Keyset(KeysetScan {
                    table: "sessions",
                    fields: session_fields(),
                    time_column: None,
                    id_column: "session_id",
                    id_is_uuid: false,
                    event_types: Vec::new(),
                    since: Some(("$start_timestamp", since)),
                    until: None,
                    before: None,
                })
            }
            DataType::Cohorts => Source::Rest(Resource::Cohorts),
            DataType::FeatureFlags => Source::Rest(Resource::FeatureFlags),
            DataType::Insights => Source::Rest(Resource::Insights),
            DataType::Annotations => Source::Rest(Resource::Annotations),
            DataType::Experiments => Source::Rest(Resource::Experiments),
        })
    }

    /// Whether runs continue from a watermark (events; persons on `created_at`) rather than
    /// replacing the table with a fresh snapshot.
    pub(crate) fn is_incremental(&self) -> bool {
        matches!(self, Source::Keyset(scan) if scan.time_column.is_some())
    }

    /// The fields REST objects declare; every other key is typed by its first value.
    pub(crate) fn rest_fields() -> Vec<FieldSpec> {
        vec![FieldSpec::dynamic("id")]
    }
}

/// The columns of `events`, in select and output order; with `person_properties`, the
/// person's properties as they were at event time (see [`select_expression`]).
pub(crate) fn event_fields(person_properties: bool) -> Vec<FieldSpec> {
    let mut fields = vec![
        FieldSpec::fixed("uuid", ColumnType::Utf8),
        FieldSpec::fixed("event", ColumnType::Utf8),
        FieldSpec::fixed("timestamp", ColumnType::Timestamp),
        FieldSpec::fixed("distinct_id", ColumnType::Utf8),
        FieldSpec::fixed("person_id", ColumnType::Utf8),
        FieldSpec::fixed("created_at", ColumnType::Timestamp),
        FieldSpec::fixed("elements_chain", ColumnType::Utf8),
        FieldSpec::flatten("properties"),
    ];
    if person_properties {
        fields.push(FieldSpec::flatten(PERSON_PROPERTIES));
    }
    fields
}

/// The events field holding the person's properties as of the event.
pub(crate) const PERSON_PROPERTIES: &str = "person_properties";

/// How a field is selected. `person_properties` is HogQL's `person.properties`, which on
/// `events` is the persons-on-events column (the person as of the event, a JSON string); the
/// alias fixes the response's column name whatever name PostHog would give the bare chain.
pub(crate) fn select_expression(field: &str) -> std::borrow::Cow<'_, str> {
    match field {
        PERSON_PROPERTIES => "person.properties as person_properties".into(),
        name => name.into(),
    }
}

/// How far back a sessions snapshot reaches without `initial_since`: 30 days.
const DEFAULT_SESSIONS_WINDOW_MICROS: i64 = 30 * 24 * 3600 * 1_000_000;

/// The columns of `sessions` (v3), in select and output order.
pub(crate) fn session_fields() -> Vec<FieldSpec> {
    vec![
        FieldSpec::fixed("session_id", ColumnType::Utf8),
        FieldSpec::fixed("distinct_id", ColumnType::Utf8),
        FieldSpec::fixed("$start_timestamp", ColumnType::Timestamp),
        FieldSpec::fixed("$end_timestamp", ColumnType::Timestamp),
        FieldSpec::fixed("$session_duration", ColumnType::Int64),
        FieldSpec::fixed("$pageview_count", ColumnType::Int64),
        FieldSpec::fixed("$autocapture_count", ColumnType::Int64),
        FieldSpec::fixed("$entry_current_url", ColumnType::Utf8),
        FieldSpec::fixed("$end_current_url", ColumnType::Utf8),
        FieldSpec::fixed("$is_bounce", ColumnType::Boolean),
    ]
}

/// The columns of `persons`, in select and output order.
pub(crate) fn person_fields() -> Vec<FieldSpec> {
    vec![
        FieldSpec::fixed("id", ColumnType::Utf8),
        FieldSpec::fixed("created_at", ColumnType::Timestamp),
        FieldSpec::fixed("is_identified", ColumnType::Boolean),
        FieldSpec::flatten("properties"),
    ]
}

impl KeysetScan {
    /// The scan as the client's pager reads it: the select list, the keys, and the filters
    /// every page repeats (a repair's or a slice's upper bound, the sessions window, the event
    /// names), with
    /// every value bound as a placeholder.
    pub(crate) fn query(&self) -> KeysetQuery {
        let select = self.fields.iter().map(|f| select_expression(&f.name));
        let mut query = KeysetQuery::new(self.table, select, self.id_column);
        if let Some(time) = self.time_column {
            query = query.time_column(time);
        }
        if !self.id_is_uuid {
            query = query.text_id();
        }
        if let (Some(until), Some(time)) = (self.until, self.time_column) {
            query = query.filter(KeysetFilter::at_or_before(time, "until", until));
        }
        if let (Some(before), Some(time)) = (self.before, self.time_column) {
            query = query.filter(KeysetFilter::before(time, "before", before));
        }
        if let Some((column, since)) = self.since {
            query = query.filter(KeysetFilter::at_or_after(column, "since", since));
        }
        if !self.event_types.is_empty() {
            let names: Vec<String> = (0..self.event_types.len())
                .map(|i| format!("{{event_{i}}}"))
                .collect();
            let mut filter = KeysetFilter::new(format!("event in ({})", names.join(", ")));
            for (i, name) in self.event_types.iter().enumerate() {
                filter = filter.value(format!("event_{i}"), name.clone());
            }
            query = query.filter(filter);
        }
        query
    }

    /// The query for one page (tests read the text the pager sends).
    #[cfg(test)]
    pub(crate) fn page_query(&self, start: &Start, limit: u32) -> posthog_client::HogQlQuery {
        self.query().page(start, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(event_types: &[&str]) -> KeysetScan {
        KeysetScan {
            table: "events",
            fields: event_fields(true),
            time_column: Some("timestamp"),
            id_column: "uuid",
            id_is_uuid: true,
            since: None,
            until: None,
            before: None,
            event_types: event_types.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn keyset_query_binds_cursor_values_and_never_splices_them() {
        let cursor = Cursor {
            time: Some(1_700_000_000_123_456),
            id: "0190a000-0000-7000-8000-000000000001') or 1=1 --".into(),
        };
        let q = events(&["$pageview"]).page_query(&Start::After(cursor.clone()), 500);
        assert_eq!(
            q.text(),
            "select uuid, event, timestamp, distinct_id, person_id, created_at, elements_chain, \
             properties, person.properties as person_properties from events where \
             (timestamp, uuid) > (toDateTime({cursor_time}), toUUID({cursor_id})) and \
             event in ({event_0}) order by timestamp, uuid limit 500"
        );
        assert_eq!(q.values()["cursor_time"], "2023-11-14T22:13:20.123456Z");
        assert_eq!(q.values()["cursor_id"], cursor.id.as_str());
        assert_eq!(q.values()["event_0"], "$pageview");
    }

    #[test]
    fn lookback_start_is_inclusive_and_first_page_is_unfiltered() {
        let q = events(&[]).page_query(&Start::AtOrAfter(0), 100);
        assert!(
            q.text()
                .contains("where timestamp >= toDateTime({cursor_time})")
        );
        assert_eq!(q.values()["cursor_time"], "1970-01-01T00:00:00.000000Z");
        let q = events(&[]).page_query(&Start::Beginning, 100);
        assert!(!q.text().contains("where"));
    }

    #[test]
    fn a_repair_scan_reads_a_closed_range() {
        let scan = KeysetScan {
            until: Some(1_700_000_100_000_000),
            ..events(&[])
        };
        let q = scan.page_query(&Start::AtOrAfter(1_700_000_000_000_000), 100);
        assert!(
            q.text().contains(
                "where timestamp >= toDateTime({cursor_time}) and timestamp <= \
                 toDateTime({until}) order by timestamp, uuid limit 100"
            ),
            "{}",
            q.text()
        );
        assert_eq!(q.values()["until"], "2023-11-14T22:15:00.000000Z");
    }

    #[test]
    fn a_slice_ends_before_its_boundary() {
        let scan = KeysetScan {
            before: Some(1_700_000_100_000_000),
            ..events(&[])
        };
        let q = scan.page_query(&Start::AtOrAfter(1_700_000_000_000_000), 100);
        assert!(
            q.text().contains(
                "where timestamp >= toDateTime({cursor_time}) and timestamp < \
                 toDateTime({before}) order by timestamp, uuid limit 100"
            ),
            "{}",
            q.text()
        );
        assert_eq!(q.values()["before"], "2023-11-14T22:15:00.000000Z");
    }

    #[test]
    fn persons_snapshot_pages_on_id_alone() {
        let scan = KeysetScan {
            table: "persons",
            fields: person_fields(),
            time_column: None,
            id_column: "id",
            id_is_uuid: true,
            event_types: Vec::new(),
            since: None,
            until: None,
            before: None,
        };
        let cursor = Cursor {
            time: None,
            id: "x".into(),
        };
        let q = scan.page_query(&Start::After(cursor), 1000);
        assert_eq!(
            q.text(),
            "select id, created_at, is_identified, properties from persons where id > \
             toUUID({cursor_id}) order by id limit 1000"
        );
    }

    #[test]
    fn sessions_snapshot_pages_on_the_session_id_text_within_its_window() {
        let scan = KeysetScan {
            table: "sessions",
            fields: session_fields(),
            time_column: None,
            id_column: "session_id",
            id_is_uuid: false,
            event_types: Vec::new(),
            since: Some(("$start_timestamp", 1_700_000_000_000_000)),
            until: None,
            before: None,
        };
        let cursor = Cursor {
            time: None,
            id: "0193-x".into(),
        };
        let q = scan.page_query(&Start::After(cursor), 500);
        assert_eq!(
            q.text(),
            "select session_id, distinct_id, $start_timestamp, $end_timestamp, \
             $session_duration, $pageview_count, $autocapture_count, $entry_current_url, \
             $end_current_url, $is_bounce from sessions where session_id > {cursor_id} and \
             $start_timestamp >= toDateTime({since}) order by session_id limit 500"
        );
        assert_eq!(q.values()["cursor_id"], "0193-x");
        assert_eq!(q.values()["since"], "2023-11-14T22:13:20.000000Z");
    }
}
