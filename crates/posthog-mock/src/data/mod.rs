//! The data a mock server serves: events, persons and REST fixtures, their export shape, and
//! the deterministic generator.

mod fixtures;
mod generate;

use serde_json::{Map, Value};
use time::{OffsetDateTime, UtcOffset};
use uuid::Uuid;

use crate::timefmt::{isoformat, micros_of, parse_datetime};

pub(crate) use generate::{CoreEvent, Generator, stable_hash};
pub use generate::{DataShape, GenSpec, WIDE_KEYS_PER_EVENT};

/// An error in event or person data handed to the mock (export-shape JSON that does not parse).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// A required field is absent or null.
    #[error("event field `{0}` is missing")]
    Missing(&'static str),
    /// A field has the wrong JSON type or an unparsable value.
    #[error("event field `{field}` is invalid: {reason}")]
    Invalid {
        /// The field name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A JSONL line is not JSON.
    #[error("line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// The parse error.
        reason: String,
    },
}

/// One event, as stored in PostHog's `events` table.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Event UUID (PostHog clients send UUIDv7).
    pub uuid: Uuid,
    /// Event name, e.g. `$pageview`.
    pub event: String,
    /// The distinct id it was captured with.
    pub distinct_id: String,
    /// Client timestamp (UTC, microsecond precision).
    pub timestamp: OffsetDateTime,
    /// Server ingestion time (UTC, microsecond precision).
    pub created_at: OffsetDateTime,
    /// The person it belongs to, if any.
    pub person_id: Option<Uuid>,
    /// Event properties.
    pub properties: Map<String, Value>,
    /// Autocapture elements chain (empty for other events).
    pub elements_chain: String,
    /// The person's properties as of the event's timestamp (PostHog's persons-on-events
    /// `events.person_properties`, read in HogQL as `person.properties`); empty for an event
    /// without a person.
    pub person_properties: Map<String, Value>,
}

impl Event {
    /// The export shape as a JSON value, keys in this order: `uuid`, `event`, `properties` (an
    /// object), `distinct_id`, `timestamp`, `created_at` (ISO 8601 UTC), `elements_chain`,
    /// `person_id` (a string or null), `person_properties` (an object, `{}` without a person).
    pub fn to_export_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("uuid".into(), Value::String(self.uuid.to_string()));
        m.insert("event".into(), Value::String(self.event.clone()));
        m.insert("properties".into(), Value::Object(self.properties.clone()));
        m.insert(
            "distinct_id".into(),
            Value::String(self.distinct_id.clone()),
        );
        m.insert("timestamp".into(), Value::String(iso_utc(self.timestamp)));
        m.insert("created_at".into(), Value::String(iso_utc(self.created_at)));
        m.insert(
            "elements_chain".into(),
            Value::String(self.elements_chain.clone()),
        );
        m.insert(
            "person_id".into(),
            self.person_id
                .map_or(Value::Null, |p| Value::String(p.to_string())),
        );
        m.insert(
            "person_properties".into(),
            Value::Object(self.person_properties.clone()),
        );
        Value::Object(m)
    }

    /// One JSONL line (no trailing newline) of the export shape, with the fixed top-level key
    /// order of [`Event::to_export_json`] and the keys of `properties` and `person_properties`
    /// sorted at every level, so the bytes do not depend on `serde_json` features.
    pub fn to_export_line(&self) -> String {
        let mut out = String::with_capacity(1024);
        out.push_str("{\"uuid\":");
        push_json_str(&mut out, &self.uuid.to_string());
        out.push_str(",\"event\":");
        push_json_str(&mut out, &self.event);
        out.push_str(",\"properties\":");
        write_canonical_object(&mut out, &self.properties);
        out.push_str(",\"distinct_id\":");
        push_json_str(&mut out, &self.distinct_id);
        out.push_str(",\"timestamp\":");
        push_json_str(&mut out, &iso_utc(self.timestamp));
        out.push_str(",\"created_at\":");
        push_json_str(&mut out, &iso_utc(self.created_at));
        out.push_str(",\"elements_chain\":");
        push_json_str(&mut out, &self.elements_chain);
        out.push_str(",\"person_id\":");
        match self.person_id {
            Some(p) => push_json_str(&mut out, &p.to_string()),
            None => out.push_str("null"),
        }
        out.push_str(",\"person_properties\":");
        write_canonical_object(&mut out, &self.person_properties);
        out.push('}');
        out
    }

    /// Reads the export shape. `properties` and `person_properties` may be objects or JSON
    /// strings (as the query API returns them) and default to `{}`; `created_at` defaults to
    /// `timestamp`; `uuid` must be present.
    pub fn from_export_json(value: &Value) -> Result<Event, DataError> {
        let obj = value.as_object().ok_or(DataError::Invalid {
            field: "event",
            reason: "expected a JSON object".into(),
        })?;
        let uuid = parse_uuid_field(obj, "uuid")?.ok_or(DataError::Missing("uuid"))?;
        let event = str_field(obj, "event")?.ok_or(DataError::Missing("event"))?;
        let distinct_id =
            str_field(obj, "distinct_id")?.ok_or(DataError::Missing("distinct_id"))?;
        let timestamp = time_field(obj, "timestamp")?.ok_or(DataError::Missing("timestamp"))?;
        let created_at = time_field(obj, "created_at")?.unwrap_or(timestamp);
        let person_id = parse_uuid_field(obj, "person_id")?;
        let properties = object_field(obj, "properties")?;
        let person_properties = object_field(obj, "person_properties")?;
        let elements_chain = str_field(obj, "elements_chain")?.unwrap_or_default();
        Ok(Event {
            uuid,
            event,
            distinct_id,
            timestamp,
            created_at,
            person_id,
            properties,
            elements_chain,
            person_properties,
        })
    }

    /// Parses JSONL (one export-shape object per line; blank lines skipped).
    pub fn parse_jsonl(text: &str) -> Result<Vec<Event>, DataError> {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(line).map_err(|e| DataError::Line {
                line: i + 1,
                reason: e.to_string(),
            })?;
            out.push(
                Event::from_export_json(&value).map_err(|e| DataError::Line {
                    line: i + 1,
                    reason: e.to_string(),
                })?,
            );
        }
        Ok(out)
    }
}

/// One person, as in PostHog's `persons` table plus its distinct ids.
#[derive(Debug, Clone, PartialEq)]
pub struct Person {
    /// Person UUID.
    pub id: Uuid,
    /// When the person was created (UTC).
    pub created_at: OffsetDateTime,
    /// Person properties.
    pub properties: Map<String, Value>,
    /// Whether the person was identified.
    pub is_identified: bool,
    /// Distinct ids merged into this person.
    pub distinct_ids: Vec<String>,
}

/// Everything the mock serves. `Default` is [`Dataset::fixtures`]: the REST fixtures and no
/// events or persons.
#[derive(Clone)]
pub struct Dataset {
    /// Events served by the `events` table (any order; the server sorts).
    pub events: Vec<Event>,
    /// Events generated on demand from this spec, in addition to `events`: the same rows
    /// [`Dataset::generate`] would produce, but properties are materialised only for rows a
    /// query touches (person properties are shared per person and change instant), so a
    /// million events cost ~130 MB instead of several GB.
    pub lazy_events: Option<GenSpec>,
    /// Persons served by the `persons` table and `…/persons/`.
    pub persons: Vec<Person>,
    /// `…/cohorts/` items.
    pub cohorts: Vec<Value>,
    /// `…/feature_flags/` items, also evaluated by `/flags`.
    pub feature_flags: Vec<Value>,
    /// `…/insights/` items.
    pub insights: Vec<Value>,
    /// `…/annotations/` items.
    pub annotations: Vec<Value>,
    /// `…/experiments/` items.
    pub experiments: Vec<Value>,
    /// `…/property_definitions/` items (each with `type`: 1 event, 2 person).
    pub property_definitions: Vec<Value>,
    /// `…/event_definitions/` items.
    pub event_definitions: Vec<Value>,
}

impl Default for Dataset {
    fn default() -> Self {
        Dataset::fixtures()
    }
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("events", &self.events.len())
            .field("lazy_events", &self.lazy_events)
            .field("persons", &self.persons.len())
            .field("cohorts", &self.cohorts.len())
            .field("feature_flags", &self.feature_flags.len())
            .field("insights", &self.insights.len())
            .field("annotations", &self.annotations.len())
            .field("experiments", &self.experiments.len())
            .field("property_definitions", &self.property_definitions.len())
            .field("event_definitions", &self.event_definitions.len())
            .finish()
    }
}

impl Dataset {
    /// The REST fixtures from `fixtures/rest/*.json`, with no events and no persons.
    pub fn fixtures() -> Dataset {
        fixtures::load()
    }

    /// Generated events and persons plus the REST fixtures; deterministic for `spec.seed`.
    pub fn generate(spec: &GenSpec) -> Dataset {
        let generator = Generator::new(spec.clone());
        let events = generator.events();
        Dataset {
            events,
            persons: generator.persons().to_vec(),
            ..Dataset::fixtures()
        }
    }

    /// Like [`Dataset::generate`], but the events are produced on demand by the server
    /// (`lazy_events`); `events` stays empty.
    pub fn generate_lazy(spec: &GenSpec) -> Dataset {
        let generator = Generator::new(spec.clone());
        Dataset {
            lazy_events: Some(spec.clone()),
            persons: generator.persons().to_vec(),
            ..Dataset::fixtures()
        }
    }

    /// The JSONL text of `fixtures/events.sample.jsonl`: the events of [`GenSpec::sample`] in
    /// generation order, one export-shape line each.
    pub fn sample_jsonl(spec: &GenSpec) -> String {
        let mut out = String::new();
        for event in Generator::new(spec.clone()).events() {
            out.push_str(&event.to_export_line());
            out.push('\n');
        }
        out
    }
}

fn iso_utc(dt: OffsetDateTime) -> String {
    isoformat(micros_of(dt), UtcOffset::UTC)
}

fn str_field(obj: &Map<String, Value>, field: &'static str) -> Result<Option<String>, DataError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) if field == "distinct_id" => Ok(Some(n.to_string())),
        Some(_) => Err(DataError::Invalid {
            field,
            reason: "expected a string".into(),
        }),
    }
}

/// A JSON object field, given as an object or as the JSON text of one; absent or null is `{}`.
fn object_field(
    obj: &Map<String, Value>,
    field: &'static str,
) -> Result<Map<String, Value>, DataError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(DataError::Invalid {
                field,
                reason: "string is not a JSON object".into(),
            }),
        },
        Some(_) => Err(DataError::Invalid {
            field,
            reason: "expected an object".into(),
        }),
    }
}

fn parse_uuid_field(
    obj: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<Uuid>, DataError> {
    match str_field(obj, field)? {
        None => Ok(None),
        Some(s) => Uuid::parse_str(&s)
            .map(Some)
            .map_err(|e| DataError::Invalid {
                field,
                reason: e.to_string(),
            }),
    }
}

fn time_field(
    obj: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<OffsetDateTime>, DataError> {
    match str_field(obj, field)? {
        None => Ok(None),
        Some(s) => parse_datetime(&s, UtcOffset::UTC)
            .map(|us| Some(crate::timefmt::datetime_of(us)))
            .ok_or(DataError::Invalid {
                field,
                reason: format!("`{s}` is not an ISO 8601 date-time"),
            }),
    }
}

/// Appends `s` as a JSON string literal.
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    // Serialising a &str cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

/// Writes `value` as compact JSON with object keys sorted at every level.
pub(crate) fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Object(m) => write_canonical_object(out, m),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        Value::String(s) => push_json_str(out, s),
        other => out.push_str(&other.to_string()),
    }
}

fn write_canonical_object(out: &mut String, map: &Map<String, Value>) {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    out.push('{');
    for (i, key) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(out, key);
        out.push(':');
        if let Some(v) = map.get(key) {
            write_canonical(out, v);
        }
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_line_round_trips() {
        let spec = GenSpec {
            events: 50,
            ..GenSpec::sample()
        };
        for event in Generator::new(spec).events() {
            let line = event.to_export_line();
            let value: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(value, event.to_export_json());
            assert_eq!(Event::from_export_json(&value).unwrap(), event);
        }
    }

    #[test]
    fn properties_may_arrive_as_a_json_string() {
        let v = serde_json::json!({
            "uuid": "0190a1b2-0000-7000-8000-000000000001",
            "event": "e", "distinct_id": "d", "timestamp": "2025-01-01T00:00:00Z",
            "properties": "{\"a\":1}"
        });
        let e = Event::from_export_json(&v).unwrap();
        assert_eq!(e.properties.get("a"), Some(&Value::from(1)));
        assert_eq!(e.created_at, e.timestamp);
        assert!(
            e.person_properties.is_empty(),
            "absent person_properties → {{}}"
        );
    }

    #[test]
    fn person_properties_are_an_object_or_its_json_text_and_close_the_export_line() {
        let base = serde_json::json!({
            "uuid": "0190a1b2-0000-7000-8000-000000000001",
            "event": "e", "distinct_id": "d", "timestamp": "2025-01-01T00:00:00Z",
        });
        let with = |pp: Value| {
            let mut v = base.clone();
            v["person_properties"] = pp;
            Event::from_export_json(&v)
        };
        let object = with(serde_json::json!({"plan": "pro", "n": 2})).unwrap();
        assert_eq!(
            object.person_properties.get("plan"),
            Some(&Value::from("pro"))
        );
        let text = with(Value::from("{\"plan\":\"pro\",\"n\":2}")).unwrap();
        assert_eq!(text, object);
        assert!(with(Value::Null).unwrap().person_properties.is_empty());
        for bad in [Value::from(3), Value::from("[1]"), serde_json::json!([1])] {
            let err = with(bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    DataError::Invalid {
                        field: "person_properties",
                        ..
                    }
                ),
                "{err}"
            );
        }
        // Fixed key order; person_properties last, its keys sorted.
        let line = object.to_export_line();
        let order = [
            "uuid",
            "event",
            "properties",
            "distinct_id",
            "timestamp",
            "created_at",
            "elements_chain",
            "person_id",
            "person_properties",
        ];
        let positions: Vec<usize> = order
            .iter()
            .map(|k| line.find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{line}");
        assert!(
            line.ends_with(",\"person_properties\":{\"n\":2,\"plan\":\"pro\"}}"),
            "{line}"
        );
        assert_eq!(
            Event::from_export_json(&serde_json::from_str(&line).unwrap()).unwrap(),
            object
        );
    }
}
