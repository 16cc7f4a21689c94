//! The REST fixtures under `fixtures/rest/` at the repository root, embedded at compile time.

use serde_json::Value;

use super::Dataset;

const COHORTS: &str = include_str!("../../../../fixtures/rest/cohorts.json");
const FEATURE_FLAGS: &str = include_str!("../../../../fixtures/rest/feature_flags.json");
const INSIGHTS: &str = include_str!("../../../../fixtures/rest/insights.json");
const ANNOTATIONS: &str = include_str!("../../../../fixtures/rest/annotations.json");
const EXPERIMENTS: &str = include_str!("../../../../fixtures/rest/experiments.json");
const PROPERTY_DEFINITIONS: &str =
    include_str!("../../../../fixtures/rest/property_definitions.json");
const EVENT_DEFINITIONS: &str = include_str!("../../../../fixtures/rest/event_definitions.json");

/// Parses one embedded fixture file. The files are part of this repository and checked by the
/// `fixtures_parse` test, so a parse failure is a build defect; it yields an empty list rather
/// than a panic.
fn parse(text: &str) -> Vec<Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(items)) => items,
        _ => Vec::new(),
    }
}

pub(super) fn load() -> Dataset {
    Dataset {
        events: Vec::new(),
        lazy_events: None,
        persons: Vec::new(),
        cohorts: parse(COHORTS),
        feature_flags: parse(FEATURE_FLAGS),
        insights: parse(INSIGHTS),
        annotations: parse(ANNOTATIONS),
        experiments: parse(EXPERIMENTS),
        property_definitions: parse(PROPERTY_DEFINITIONS),
        event_definitions: parse(EVENT_DEFINITIONS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_parse() {
        for (name, text) in [
            ("cohorts", COHORTS),
            ("feature_flags", FEATURE_FLAGS),
            ("insights", INSIGHTS),
            ("annotations", ANNOTATIONS),
            ("experiments", EXPERIMENTS),
            ("property_definitions", PROPERTY_DEFINITIONS),
            ("event_definitions", EVENT_DEFINITIONS),
        ] {
            let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(v.as_array().is_some_and(|a| a.len() >= 4), "{name}");
        }
        let d = load();
        assert_eq!(d.cohorts.len(), 7);
        assert_eq!(d.feature_flags.len(), 12);
    }
}
