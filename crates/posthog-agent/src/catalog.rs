//! What there is to query: the eight entity types of a PostHog project and their fields, read
//! from PostHog itself where it can tell.
//!
//! - [`Entity::ALL`] lists events, insights, persons, cohorts, feature flags, sessions,
//!   annotations and experiments with a description an agent can read.
//! - [`fields`] returns one entity's fields: for the HogQL tables (`events`, `persons`,
//!   `sessions`) the columns and ClickHouse types PostHog reports for `select *`, plus, for events
//!   and persons, every property definition PostHog has seen (`properties.$browser`, with its
//!   `property_type`); for REST entities the keys of a sampled object merged with the documented
//!   core fields. Every request goes through the [`Client`]'s one send path.

use futures_util::TryStreamExt;
use posthog_client::{Client, Error, HogQlQuery, ListParams, PropertyKind, Resource};
use serde::Serialize;
use serde_json::Value;

/// An entity type of a PostHog project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Entity {
    /// Tracked events (HogQL `events`).
    Events,
    /// Saved insights.
    Insights,
    /// Person profiles (HogQL `persons`).
    Persons,
    /// Cohorts.
    Cohorts,
    /// Feature flags.
    FeatureFlags,
    /// Sessions (HogQL `sessions`).
    Sessions,
    /// Annotations.
    Annotations,
    /// Experiments.
    Experiments,
}

/// Where a field's description came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldSource {
    /// PostHog's HogQL schema (`select *` column types).
    Schema,
    /// A property definition PostHog keeps for the project.
    PropertyDefinition,
    /// The keys of an object PostHog returned.
    Sample,
    /// The documented core fields of the REST object.
    Documented,
}

/// One field of an entity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldInfo {
    /// The name to use in HogQL or to read from the JSON object, e.g. `timestamp` or
    /// `properties.$browser`.
    pub name: String,
    /// ClickHouse type (schema), PostHog property type (`String`, `Numeric`, `DateTime`,
    /// `Boolean`, `Duration`) or JSON type (`string`, `number`, `boolean`, `object`, `array`).
    #[serde(rename = "type")]
    pub kind: String,
    /// What the field holds, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where this description came from.
    pub source: FieldSource,
}

impl Entity {
    /// All eight, in the seeds' order.
    pub const ALL: [Entity; 8] = [
        Entity::Events,
        Entity::Insights,
        Entity::Persons,
        Entity::Cohorts,
        Entity::FeatureFlags,
        Entity::Sessions,
        Entity::Annotations,
        Entity::Experiments,
    ];

    /// The entity's name, e.g. `feature_flags`.
    pub fn name(self) -> &'static str {
        match self {
            Entity::Events => "events",
            Entity::Insights => "insights",
            Entity::Persons => "persons",
            Entity::Cohorts => "cohorts",
            Entity::FeatureFlags => "feature_flags",
            Entity::Sessions => "sessions",
            Entity::Annotations => "annotations",
            Entity::Experiments => "experiments",
        }
    }

    /// The entity called `name` (also accepts `-` for `_` and a trailing `s` left off).
    ///
    /// ```
    /// use posthog_agent::Entity;
    /// assert_eq!(Entity::from_name("feature-flags"), Some(Entity::FeatureFlags));
    /// assert_eq!(Entity::from_name("event"), Some(Entity::Events));
    /// assert_eq!(Entity::from_name("dashboards"), None);
    /// ```
    pub fn from_name(name: &str) -> Option<Entity> {
        let name = name.trim().to_ascii_lowercase().replace('-', "_");
        Entity::ALL
            .into_iter()
            .find(|e| e.name() == name || e.name().strip_suffix('s') == Some(name.as_str()))
    }

    /// What it is, for people and agents.
    pub fn description(self) -> &'static str {
        match self {
            Entity::Events => {
                "Every tracked action (pageviews, clicks, custom events) with its properties; \
                 query with HogQL (`select … from events`). The big one."
            }
            Entity::Insights => {
                "Saved analyses (trends, funnels, retention, …) with their query definitions."
            }
            Entity::Persons => {
                "Person profiles with their properties, identified or anonymous; HogQL table \
                 `persons`."
            }
            Entity::Cohorts => "Saved groups of persons defined by property or behaviour filters.",
            Entity::FeatureFlags => {
                "Feature flags with their rollout conditions, variants and payloads."
            }
            Entity::Sessions => {
                "Sessions aggregated from events by `$session_id`: start, end, duration, \
                 entry and exit URLs, bounce; HogQL table `sessions`."
            }
            Entity::Annotations => {
                "Notes pinned to a point in time (deploys, campaigns, incidents)."
            }
            Entity::Experiments => {
                "A/B tests: their feature flag, variants, metrics, start and end dates."
            }
        }
    }

    /// The HogQL table it is queried from, if any.
    pub fn hogql_table(self) -> Option<&'static str> {
        match self {
            Entity::Events => Some("events"),
            Entity::Persons => Some("persons"),
            Entity::Sessions => Some("sessions"),
            _ => None,
        }
    }

    /// The REST collection that lists it, if any.
    pub fn resource(self) -> Option<Resource> {
        match self {
            Entity::Insights => Some(Resource::Insights),
            Entity::Persons => Some(Resource::Persons),
            Entity::Cohorts => Some(Resource::Cohorts),
            Entity::FeatureFlags => Some(Resource::FeatureFlags),
            Entity::Annotations => Some(Resource::Annotations),
            Entity::Experiments => Some(Resource::Experiments),
            Entity::Events | Entity::Sessions => None,
        }
    }

    /// Core fields PostHog documents for the entity, `(name, type, description)`.
    fn documented(self) -> &'static [(&'static str, &'static str, &'static str)] {
        match self {
            Entity::Events => &[
                (
                    "uuid",
                    "UUID",
                    "Unique event id; PostHog deduplicates on it.",
                ),
                ("event", "String", "Event name, e.g. `$pageview`."),
                ("properties", "String", "All properties, as JSON text."),
                (
                    "timestamp",
                    "DateTime64",
                    "When the event happened (client time).",
                ),
                ("distinct_id", "String", "Who sent it."),
                (
                    "created_at",
                    "DateTime64",
                    "When PostHog ingested it (server time).",
                ),
                ("elements_chain", "String", "Autocapture element chain."),
                ("person_id", "UUID", "The person the event belongs to."),
            ],
            Entity::Persons => &[
                ("id", "UUID", "Person id."),
                ("created_at", "DateTime64", "When the profile was created."),
                ("properties", "String", "Person properties, as JSON text."),
                (
                    "is_identified",
                    "Bool",
                    "Whether the person was identified.",
                ),
            ],
            Entity::Sessions => &[
                (
                    "session_id",
                    "String",
                    "Session id (`$session_id` of its events).",
                ),
                ("distinct_id", "String", "Who the session belongs to."),
                (
                    "$start_timestamp",
                    "DateTime64",
                    "First event of the session.",
                ),
                ("$end_timestamp", "DateTime64", "Last event of the session."),
                (
                    "$session_duration",
                    "Int64",
                    "Seconds from first to last event.",
                ),
                ("$pageview_count", "UInt64", "Pageviews in the session."),
                ("$entry_current_url", "String", "URL of the first event."),
                ("$end_current_url", "String", "URL of the last event."),
                (
                    "$is_bounce",
                    "Bool",
                    "At most one pageview and shorter than 10 s.",
                ),
            ],
            Entity::Insights => &[
                ("id", "number", "Insight id."),
                ("short_id", "string", "Id used in URLs."),
                ("name", "string", "Display name."),
                ("query", "object", "The insight's query definition."),
                ("created_at", "string", "Creation time."),
                ("last_modified_at", "string", "Last change."),
            ],
            Entity::Cohorts => &[
                ("id", "number", "Cohort id (use with `cohorts persons`)."),
                ("name", "string", "Display name."),
                ("filters", "object", "Property and behaviour filters."),
                (
                    "count",
                    "number",
                    "Persons in the cohort at the last calculation.",
                ),
                (
                    "is_static",
                    "boolean",
                    "Static cohorts hold an uploaded list.",
                ),
            ],
            Entity::FeatureFlags => &[
                ("id", "number", "Flag id."),
                (
                    "key",
                    "string",
                    "The key used in code and `flags evaluate`.",
                ),
                ("active", "boolean", "Whether the flag is on at all."),
                (
                    "filters",
                    "object",
                    "Release conditions, variants and payloads.",
                ),
                (
                    "rollout_percentage",
                    "number",
                    "Share of users it rolls out to.",
                ),
            ],
            Entity::Annotations => &[
                ("id", "number", "Annotation id."),
                ("content", "string", "The note."),
                ("date_marker", "string", "The instant it marks."),
                (
                    "scope",
                    "string",
                    "Project, organization or dashboard item.",
                ),
            ],
            Entity::Experiments => &[
                ("id", "number", "Experiment id."),
                ("name", "string", "Display name."),
                (
                    "feature_flag_key",
                    "string",
                    "The flag that assigns variants.",
                ),
                ("start_date", "string", "When it started."),
                ("end_date", "string", "When it ended, if it did."),
                (
                    "parameters",
                    "object",
                    "Variants and minimum detectable effect.",
                ),
            ],
        }
    }
}

/// The fields of one entity, from PostHog where it can tell (see the [module
/// docs](crate::catalog)).
///
/// ```no_run
/// # async fn demo(client: posthog_client::Client) -> Result<(), posthog_client::Error> {
/// use posthog_agent::{Entity, fields};
/// for field in fields(&client, Entity::Events).await? {
///     println!("{} {}", field.name, field.kind);
/// }
/// # Ok(()) }
/// ```
pub async fn fields(client: &Client, entity: Entity) -> Result<Vec<FieldInfo>, Error> {
    let table = match (entity.hogql_table(), entity.resource()) {
        (Some(table), _) => table,
        (None, Some(resource)) => return sampled_fields(client, entity, resource).await,
        // Every entity has a table or a resource (a unit test checks it).
        (None, None) => return Ok(Vec::new()),
    };
    let mut fields = schema_fields(client, entity, table).await?;
    let properties = match entity {
        Entity::Events => Some(PropertyKind::Event),
        Entity::Persons => Some(PropertyKind::Person),
        _ => None,
    };
    if let Some(kind) = properties {
        let mut definitions = Box::pin(client.property_definitions(kind));
        while let Some(def) = definitions.try_next().await? {
            fields.push(FieldInfo {
                name: format!("properties.{}", def.name),
                kind: def.property_type.unwrap_or_else(|| "unknown".into()),
                description: None,
                source: FieldSource::PropertyDefinition,
            });
        }
    }
    Ok(fields)
}

/// Columns of `select * from {table}`, as PostHog types them, with descriptions where the
/// column is a documented one.
async fn schema_fields(
    client: &Client,
    entity: Entity,
    table: &str,
) -> Result<Vec<FieldInfo>, Error> {
    let result = client
        .query(&HogQlQuery::new(format!("select * from {table} limit 0")).name("fields"))
        .await?;
    let describe = |name: &str| {
        entity
            .documented()
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, _, d)| (*d).to_owned())
    };
    Ok(result
        .types
        .into_iter()
        .map(|(name, kind)| FieldInfo {
            description: describe(&name),
            name,
            kind,
            source: FieldSource::Schema,
        })
        .collect())
}

/// The documented fields, then every other top-level key of the first object PostHog lists.
async fn sampled_fields(
    client: &Client,
    entity: Entity,
    resource: Resource,
) -> Result<Vec<FieldInfo>, Error> {
    let mut fields: Vec<FieldInfo> = entity
        .documented()
        .iter()
        .map(|(name, kind, description)| FieldInfo {
            name: (*name).to_owned(),
            kind: (*kind).to_owned(),
            description: Some((*description).to_owned()),
            source: FieldSource::Documented,
        })
        .collect();
    let mut pages =
        Box::pin(client.list_pages::<Value>(resource, ListParams::default().page_size(1)));
    let sample = match pages.try_next().await? {
        Some(page) => page.results.into_iter().next(),
        None => None,
    };
    if let Some(Value::Object(object)) = sample {
        for (key, value) in object {
            if let Some(known) = fields.iter_mut().find(|f| f.name == key) {
                if !value.is_null() {
                    known.kind = json_type(&value).to_owned();
                }
                continue;
            }
            fields.push(FieldInfo {
                name: key,
                kind: json_type(&value).to_owned(),
                description: None,
                source: FieldSource::Sample,
            });
        }
    }
    Ok(fields)
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entity_round_trips_through_its_name_and_has_a_description() {
        assert_eq!(Entity::ALL.len(), 8);
        for e in Entity::ALL {
            assert_eq!(Entity::from_name(e.name()), Some(e));
            assert!(!e.description().is_empty());
            assert!(e.hogql_table().is_some() || e.resource().is_some(), "{e:?}");
            assert!(!e.documented().is_empty(), "{e:?}");
        }
    }
}
