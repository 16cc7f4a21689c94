//! Pre-built, parameterised HogQL queries for the questions agents and analysts ask most: who
//! is about to churn, who the power users are, did a feature move engagement, how a funnel or an
//! experiment converts.
//!
//! A template is HogQL text with `{placeholders}` and a typed parameter list. [`Template::bind`]
//! checks every variable against its type and range and binds it through HogQL `values`, so a
//! variable is always a constant: it can never add a clause, close a string or comment out the
//! rest of the query, whatever it contains.
//!
//! ```
//! use posthog_agent::templates;
//! let churn = templates::find("churn_risk").unwrap();
//! let query = churn.bind([("inactive_days", "10")]).unwrap();
//! assert_eq!(query.values()["inactive_days"], 10);
//! assert_eq!(query.values()["lookback_days"], 28); // the default
//! assert!(churn.bind([("inactive_days", "ten")]).is_err());
//! ```

use posthog_client::{Error, HogQlQuery};
use serde::Serialize;
use serde_json::{Map, Value};

/// The type of a template parameter, with its bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ParamKind {
    /// A whole number in `min..=max`.
    Integer {
        /// Smallest accepted value.
        min: i64,
        /// Largest accepted value.
        max: i64,
    },
    /// Text of at most `max_len` characters, bound as a string constant.
    Text {
        /// Longest accepted value, in characters.
        max_len: usize,
    },
}

/// One parameter of a [`Template`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Param {
    /// The placeholder name, `{name}` in the HogQL.
    pub name: &'static str,
    /// Its type and bounds.
    #[serde(flatten)]
    pub kind: ParamKind,
    /// What it means, for people and agents.
    pub description: &'static str,
    /// The value used when the caller gives none; `None` makes the parameter required.
    pub default: Option<&'static str>,
}

/// A parameterised HogQL query with a description an agent can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Template {
    /// Stable identifier, e.g. `churn_risk`.
    pub name: &'static str,
    /// Grouping for listings: `engagement`, `retention`, `conversion`, `acquisition`, …
    pub category: &'static str,
    /// What question it answers and how to read its columns.
    pub description: &'static str,
    /// Its parameters.
    pub params: &'static [Param],
    /// The HogQL text, with `{name}` placeholders.
    pub hogql: &'static str,
}

const DAYS: Param = days("30");

const fn days(default: &'static str) -> Param {
    Param {
        name: "days",
        kind: ParamKind::Integer { min: 1, max: 3650 },
        description: "How many days back from now to look.",
        default: Some(default),
    }
}

const fn limit(default: &'static str) -> Param {
    Param {
        name: "limit",
        kind: ParamKind::Integer {
            min: 1,
            max: 50_000,
        },
        description: "Most rows to return.",
        default: Some(default),
    }
}

const fn text(
    name: &'static str,
    description: &'static str,
    default: Option<&'static str>,
) -> Param {
    Param {
        name,
        kind: ParamKind::Text { max_len: 400 },
        description,
        default,
    }
}

const OPTIONAL_EVENT: Param = text(
    "event",
    "Only this event; empty (the default) means every event.",
    Some(""),
);

/// Every template, sorted by name.
pub const CATALOG: &[Template] = &[
    Template {
        name: "churn_risk",
        category: "retention",
        description: "Users who were active in the lookback window but not in the last \
            `inactive_days` days: people drifting away. Columns: distinct_id, last_seen, events \
            (in the window), sorted by events so the most engaged at-risk users come first.",
        params: &[
            Param {
                name: "lookback_days",
                kind: ParamKind::Integer { min: 2, max: 3650 },
                description: "Window in which users must have been active.",
                default: Some("28"),
            },
            Param {
                name: "inactive_days",
                kind: ParamKind::Integer { min: 1, max: 3649 },
                description: "Days without any event that count as at risk; less than \
                    lookback_days.",
                default: Some("7"),
            },
            limit("100"),
        ],
        hogql: "select distinct_id, max(timestamp) as last_seen, count() as events \
            from events \
            where timestamp >= now() - toIntervalDay({lookback_days}) \
            group by distinct_id \
            having last_seen < now() - toIntervalDay({inactive_days}) \
            order by events desc, distinct_id \
            limit {limit}",
    },
    Template {
        name: "daily_active_users",
        category: "engagement",
        description: "Distinct users per day (DAU), optionally of one event. Columns: day, \
            users, events.",
        params: &[DAYS, OPTIONAL_EVENT],
        hogql: "select toDate(timestamp) as day, uniq(distinct_id) as users, count() as events \
            from events \
            where timestamp >= now() - toIntervalDay({days}) \
            and ({event} = '' or event = {event}) \
            group by day order by day",
    },
    Template {
        name: "device_breakdown",
        category: "audience",
        description: "Users and events by device type and browser. Columns: device_type, \
            browser, users, events.",
        params: &[DAYS, limit("50")],
        hogql: "select properties.$device_type as device_type, properties.$browser as browser, \
            uniq(distinct_id) as users, count() as events \
            from events \
            where timestamp >= now() - toIntervalDay({days}) \
            group by device_type, browser \
            order by users desc, events desc \
            limit {limit}",
    },
    Template {
        name: "error_overview",
        category: "quality",
        description: "Captured exceptions (`$exception` events) by type. Columns: \
            exception_type, occurrences, users, last_seen.",
        params: &[days("7"), limit("50")],
        hogql: "select properties.$exception_type as exception_type, count() as occurrences, \
            uniq(distinct_id) as users, max(timestamp) as last_seen \
            from events \
            where event = '$exception' and timestamp >= now() - toIntervalDay({days}) \
            group by exception_type \
            order by occurrences desc \
            limit {limit}",
    },
    Template {
        name: "event_volume",
        category: "engagement",
        description: "Events per day, with the distinct users behind them, optionally of one \
            event: a first look at traffic and tracking health. Columns: day, events, users.",
        params: &[days("14"), OPTIONAL_EVENT],
        hogql: "select toDate(timestamp) as day, count() as events, uniq(distinct_id) as users \
            from events \
            where timestamp >= now() - toIntervalDay({days}) \
            and ({event} = '' or event = {event}) \
            group by day order by day",
    },
    Template {
        name: "experiment_results",
        category: "conversion",
        description: "Conversion per variant of a feature-flag experiment: users are assigned \
            to the variant recorded in their events' `$feature/<flag_key>` property, and \
            converted if they sent `goal_event` in the window. Columns: variant, users, \
            converted, conversion_pct. Significance is not computed.",
        params: &[
            text("flag_key", "The experiment's feature-flag key.", None),
            text("goal_event", "The event that counts as a conversion.", None),
            DAYS,
        ],
        hogql: "select variant, count() as users, countIf(conversions > 0) as converted, \
            round(100 * countIf(conversions > 0) / greatest(count(), 1), 2) as conversion_pct \
            from (\
                select distinct_id, \
                max(JSONExtractString(properties, concat('$feature/', {flag_key}))) as variant, \
                countIf(event = {goal_event}) as conversions \
                from events \
                where timestamp >= now() - toIntervalDay({days}) \
                group by distinct_id\
            ) \
            where variant != '' \
            group by variant order by variant",
    },
    Template {
        name: "feature_impact",
        category: "engagement",
        description: "Daily users and actions of one event split by the value of one of its \
            properties (e.g. `version` = old/new): did a change move engagement? Columns: day, \
            value, users, actions.",
        params: &[
            text(
                "event",
                "The event to measure, e.g. `Dashboard View`.",
                None,
            ),
            text(
                "property",
                "The event property that tells the variants apart, e.g. `version`.",
                None,
            ),
            days("14"),
        ],
        hogql: "select toDate(timestamp) as day, JSONExtractString(properties, {property}) as value, \
            uniq(distinct_id) as users, count() as actions \
            from events \
            where event = {event} and timestamp >= now() - toIntervalDay({days}) \
            group by day, value order by day, value",
    },
    Template {
        name: "funnel_conversion",
        category: "conversion",
        description: "Two-step funnel: of the users who sent `step_1`, how many sent `step_2` \
            at or after their first `step_1`. Columns: entered, converted, conversion_pct.",
        params: &[
            text("step_1", "The first step's event, e.g. `$pageview`.", None),
            text("step_2", "The second step's event, e.g. `signed_up`.", None),
            DAYS,
        ],
        hogql: "select count() as entered, countIf(step_2_at >= step_1_at) as converted, \
            round(100 * countIf(step_2_at >= step_1_at) / greatest(count(), 1), 1) as conversion_pct \
            from (\
                select distinct_id, minIf(timestamp, event = {step_1}) as step_1_at, \
                maxIf(timestamp, event = {step_2}) as step_2_at, \
                countIf(event = {step_1}) as step_1_events \
                from events \
                where timestamp >= now() - toIntervalDay({days}) \
                and event in ({step_1}, {step_2}) \
                group by distinct_id \
                having step_1_events > 0\
            )",
    },
    Template {
        name: "new_persons",
        category: "acquisition",
        description: "Person profiles created per day. Columns: day, persons.",
        params: &[DAYS],
        hogql: "select toDate(created_at) as day, count() as persons \
            from persons \
            where created_at >= now() - toIntervalDay({days}) \
            group by day order by day",
    },
    Template {
        name: "power_users",
        category: "engagement",
        description: "The most engaged users: active on at least `min_active_days` distinct \
            days in the window, by event count. Columns: distinct_id, events, active_days, \
            last_seen.",
        params: &[
            DAYS,
            Param {
                name: "min_active_days",
                kind: ParamKind::Integer { min: 1, max: 3650 },
                description: "Fewest distinct active days to count as a power user.",
                default: Some("3"),
            },
            limit("50"),
        ],
        hogql: "select distinct_id, count() as events, uniq(toDate(timestamp)) as active_days, \
            max(timestamp) as last_seen \
            from events \
            where timestamp >= now() - toIntervalDay({days}) \
            group by distinct_id \
            having active_days >= {min_active_days} \
            order by events desc, distinct_id \
            limit {limit}",
    },
    Template {
        name: "property_values",
        category: "exploration",
        description: "The most common values of one property of one event. Columns: value, \
            events, users.",
        params: &[
            text("event", "The event, e.g. `$pageview`.", None),
            text("property", "The property name, e.g. `$browser`.", None),
            DAYS,
            limit("50"),
        ],
        hogql: "select JSONExtractString(properties, {property}) as value, count() as events, \
            uniq(distinct_id) as users \
            from events \
            where event = {event} and timestamp >= now() - toIntervalDay({days}) \
            group by value order by events desc, value \
            limit {limit}",
    },
    Template {
        name: "retention_weekly",
        category: "retention",
        description: "Users grouped by the week they were first seen in the window (weeks \
            start on Sunday), and how many came back at least `return_after_days` days after \
            their first event. First seen means first seen within the window, not ever. \
            Columns: cohort_week, users, retained, retained_pct.",
        params: &[
            days("90"),
            Param {
                name: "return_after_days",
                kind: ParamKind::Integer { min: 1, max: 365 },
                description: "Days after the first event that a later event must reach.",
                default: Some("7"),
            },
        ],
        hogql: "select toStartOfWeek(first_seen) as cohort_week, count() as users, \
            countIf(last_seen >= first_seen + toIntervalDay({return_after_days})) as retained, \
            round(100 * countIf(last_seen >= first_seen + toIntervalDay({return_after_days})) \
            / greatest(count(), 1), 1) as retained_pct \
            from (\
                select distinct_id, min(timestamp) as first_seen, max(timestamp) as last_seen \
                from events \
                where timestamp >= now() - toIntervalDay({days}) \
                group by distinct_id\
            ) \
            group by cohort_week order by cohort_week",
    },
    Template {
        name: "session_overview",
        category: "engagement",
        description: "Sessions per day with their average duration and bounce rate, from the \
            `sessions` table. Columns: day, sessions, avg_duration_s, bounce_pct.",
        params: &[days("14")],
        hogql: "select toDate($start_timestamp) as day, count() as sessions, \
            round(avg($session_duration), 1) as avg_duration_s, \
            round(100 * countIf($is_bounce) / greatest(count(), 1), 1) as bounce_pct \
            from sessions \
            where $start_timestamp >= now() - toIntervalDay({days}) \
            group by day order by day",
    },
    Template {
        name: "stickiness",
        category: "engagement",
        description: "How many users were active on 1, 2, 3, … distinct days of the window, \
            optionally for one event. Columns: active_days, users.",
        params: &[DAYS, OPTIONAL_EVENT],
        hogql: "select active_days, count() as users \
            from (\
                select distinct_id, uniq(toDate(timestamp)) as active_days \
                from events \
                where timestamp >= now() - toIntervalDay({days}) \
                and ({event} = '' or event = {event}) \
                group by distinct_id\
            ) \
            group by active_days order by active_days",
    },
    Template {
        name: "top_events",
        category: "exploration",
        description: "The most frequent events with their distinct users: what is tracked \
            and how much. Columns: event, events, users.",
        params: &[days("7"), limit("20")],
        hogql: "select event, count() as events, uniq(distinct_id) as users \
            from events \
            where timestamp >= now() - toIntervalDay({days}) \
            group by event order by events desc, event \
            limit {limit}",
    },
    Template {
        name: "top_pages",
        category: "acquisition",
        description: "The most viewed pages (`$pageview` by `$current_url`). Columns: url, \
            views, visitors.",
        params: &[days("7"), limit("50")],
        hogql: "select properties.$current_url as url, count() as views, \
            uniq(distinct_id) as visitors \
            from events \
            where event = '$pageview' and timestamp >= now() - toIntervalDay({days}) \
            group by url order by views desc, url \
            limit {limit}",
    },
    Template {
        name: "traffic_sources",
        category: "acquisition",
        description: "Where visitors come from (`$referring_domain` of pageviews; `$direct` \
            for none). Columns: source, visitors, pageviews.",
        params: &[DAYS, limit("50")],
        hogql: "select properties.$referring_domain as source, uniq(distinct_id) as visitors, \
            count() as pageviews \
            from events \
            where event = '$pageview' and timestamp >= now() - toIntervalDay({days}) \
            group by source order by visitors desc, source \
            limit {limit}",
    },
    Template {
        name: "user_timeline",
        category: "exploration",
        description: "One user's most recent events: what did this person do? Columns: \
            timestamp, event, url.",
        params: &[
            text("distinct_id", "The user's distinct id.", None),
            DAYS,
            limit("100"),
        ],
        hogql: "select timestamp, event, properties.$current_url as url \
            from events \
            where distinct_id = {distinct_id} and timestamp >= now() - toIntervalDay({days}) \
            order by timestamp desc \
            limit {limit}",
    },
    Template {
        name: "weekly_active_users",
        category: "engagement",
        description: "Distinct users per week (weeks start on Sunday), optionally of one \
            event. Columns: week, users, events.",
        params: &[days("90"), OPTIONAL_EVENT],
        hogql: "select toStartOfWeek(timestamp) as week, uniq(distinct_id) as users, \
            count() as events \
            from events \
            where timestamp >= now() - toIntervalDay({days}) \
            and ({event} = '' or event = {event}) \
            group by week order by week",
    },
];

/// Every template, sorted by name.
pub fn all() -> &'static [Template] {
    CATALOG
}

/// The template called `name`.
pub fn find(name: &str) -> Option<&'static Template> {
    CATALOG.iter().find(|t| t.name == name)
}

impl Template {
    /// Checks `vars` against the parameters and returns the query with every placeholder
    /// bound; parameters not given take their defaults.
    ///
    /// Fails with [`Error::InvalidRequest`] naming the template and variable when a variable
    /// is unknown, missing without a default, of the wrong type, or out of range.
    pub fn bind<K, V>(&self, vars: impl IntoIterator<Item = (K, V)>) -> Result<HogQlQuery, Error>
    where
        K: AsRef<str>,
        V: Into<Value>,
    {
        let mut given = Map::new();
        for (key, value) in vars {
            let key = key.as_ref();
            if !self.params.iter().any(|p| p.name == key) {
                return Err(self.invalid(format!(
                    "unknown variable {key:?}; it takes {}",
                    self.param_names()
                )));
            }
            given.insert(key.to_owned(), value.into());
        }
        let mut query = HogQlQuery::new(self.hogql).name(format!("template {}", self.name));
        for param in self.params {
            let value = match (given.remove(param.name), param.default) {
                (Some(v), _) => v,
                (None, Some(default)) => Value::from(default),
                (None, None) => {
                    return Err(self.invalid(format!(
                        "variable {:?} is required ({})",
                        param.name, param.description
                    )));
                }
            };
            let bound = param
                .check(&value)
                .map_err(|why| self.invalid(format!("variable {:?}: {why}", param.name)))?;
            query = query.value(param.name, bound);
        }
        Ok(query)
    }

    fn param_names(&self) -> String {
        if self.params.is_empty() {
            return "no variables".into();
        }
        self.params
            .iter()
            .map(|p| p.name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn invalid(&self, message: String) -> Error {
        Error::InvalidRequest {
            message: format!("template {}: {message}", self.name),
        }
    }
}

impl Param {
    /// The bound value for `value`, or why it is not acceptable.
    fn check(&self, value: &Value) -> Result<Value, String> {
        match self.kind {
            ParamKind::Integer { min, max } => {
                let n = match value {
                    Value::Number(n) => n.as_i64(),
                    Value::String(s) => s.trim().parse::<i64>().ok(),
                    _ => None,
                }
                .ok_or_else(|| format!("{} is not a whole number", shown(value)))?;
                if !(min..=max).contains(&n) {
                    return Err(format!("{n} is out of range {min}..={max}"));
                }
                Ok(Value::from(n))
            }
            ParamKind::Text { max_len } => {
                let text = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return Err(format!("{} is not text", shown(value))),
                };
                let len = text.chars().count();
                if len > max_len {
                    return Err(format!("is {len} characters long, more than {max_len}"));
                }
                if text.contains('\0') {
                    return Err("contains a NUL character".into());
                }
                Ok(Value::String(text))
            }
        }
    }
}

/// A value for an error message, shortened so a huge input does not flood the terminal.
fn shown(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(60) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn placeholders(hogql: &str) -> BTreeSet<&str> {
        let mut found = BTreeSet::new();
        let mut rest = hogql;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let close = after.find('}').expect("unclosed placeholder");
            found.insert(&after[..close]);
            rest = &after[close + 1..];
        }
        found
    }

    #[test]
    fn catalogue_is_sorted_unique_and_large_enough() {
        assert!(CATALOG.len() >= 14, "{} templates", CATALOG.len());
        let names: Vec<_> = CATALOG.iter().map(|t| t.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            names, sorted,
            "catalogue must be sorted by name, without duplicates"
        );
    }

    #[test]
    fn every_placeholder_is_a_declared_parameter_and_every_parameter_is_used() {
        for t in CATALOG {
            let used = placeholders(t.hogql);
            let declared: BTreeSet<&str> = t.params.iter().map(|p| p.name).collect();
            assert_eq!(used, declared, "template {}", t.name);
            assert!(!t.description.is_empty(), "template {}", t.name);
        }
    }

    #[test]
    fn every_default_passes_its_own_check() {
        for t in CATALOG {
            for p in t.params {
                if let Some(d) = p.default {
                    p.check(&Value::from(d))
                        .unwrap_or_else(|e| panic!("{}.{}: {e}", t.name, p.name));
                }
            }
        }
    }

    #[test]
    fn templates_with_only_defaulted_parameters_bind_without_variables() {
        let top = find("top_events").unwrap();
        let q = top.bind(Vec::<(&str, Value)>::new()).unwrap();
        assert_eq!(q.values()["days"], 7);
        assert_eq!(q.values()["limit"], 20);
        assert_eq!(q.text(), top.hogql);
    }

    #[test]
    fn bad_variables_are_refused_with_the_template_and_variable_named() {
        let t = find("power_users").unwrap();
        let cases: [(&str, Value, &str); 5] = [
            (
                "days",
                Value::from("abc"),
                "variable \"days\": \"abc\" is not a whole number",
            ),
            (
                "days",
                Value::from(0),
                "variable \"days\": 0 is out of range 1..=3650",
            ),
            ("limit", Value::from(50_001), "out of range 1..=50000"),
            ("days", Value::from(1.5), "is not a whole number"),
            (
                "nope",
                Value::from(1),
                "unknown variable \"nope\"; it takes days",
            ),
        ];
        for (name, value, expected) in cases {
            let err = t.bind([(name, value)]).unwrap_err().to_string();
            assert!(err.contains("template power_users: "), "{err}");
            assert!(err.contains(expected), "{err} should contain {expected}");
        }
        let err = find("funnel_conversion")
            .unwrap()
            .bind([("step_1", "a")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("variable \"step_2\" is required"), "{err}");
        let long = "x".repeat(401);
        let err = find("user_timeline")
            .unwrap()
            .bind([("distinct_id", long.as_str())])
            .unwrap_err()
            .to_string();
        assert!(err.contains("401 characters long, more than 400"), "{err}");
    }

    #[test]
    fn injection_attempts_stay_bound_values_and_never_change_the_query_text() {
        let attack = "x' OR 1=1 --";
        let t = find("user_timeline").unwrap();
        let q = t.bind([("distinct_id", attack)]).unwrap();
        assert_eq!(q.text(), t.hogql, "the query text must not change");
        assert_eq!(q.values()["distinct_id"], attack);
        let err = find("top_events")
            .unwrap()
            .bind([("limit", "1) union all select 1 --")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a whole number"), "{err}");
    }
}
