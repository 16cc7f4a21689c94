//! The catalogue and the templates against the mock: fields read from PostHog's schema,
//! property definitions and samples; every HogQL template, checked against answers computed here
//! from the raw dataset; and an injection through a variable that stays a constant.

mod util;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use posthog_agent::{Entity, FieldSource, fields, templates};
use posthog_client::QueryResult;
use posthog_mock::{Dataset, Event, GenSpec, MockConfig, MockServer, RouteClass};
use serde_json::{Value, json};
use time::OffsetDateTime;
use util::{PERSONAL_KEY, PROJECT_ID, PROJECT_KEY, client, mock};

/// Events over the last 20 days up to one day ago, so templates looking back from now see them.
fn recent_dataset() -> Dataset {
    let now = OffsetDateTime::now_utc();
    Dataset::generate(&GenSpec {
        seed: 11,
        events: 600,
        persons: 25,
        start: now - Duration::from_secs(20 * 86_400),
        span: Duration::from_secs(19 * 86_400),
        ..GenSpec::default()
    })
}

async fn mock_serving(dataset: Dataset) -> MockServer {
    MockServer::start(MockConfig {
        personal_api_key: PERSONAL_KEY.into(),
        project_api_key: PROJECT_KEY.into(),
        project_id: PROJECT_ID,
        ..MockConfig::with_dataset(dataset)
    })
    .await
    .expect("mock starts")
}

#[tokio::test]
async fn fields_come_from_the_schema_property_definitions_and_samples() {
    let mock = mock().await;
    let client = client(&mock);
    let events = fields(&client, Entity::Events).await.unwrap();
    let uuid = events
        .iter()
        .find(|f| f.name == "uuid")
        .expect("uuid column");
    assert_eq!(
        (uuid.kind.as_str(), uuid.source),
        ("UUID", FieldSource::Schema)
    );
    assert!(uuid.description.is_some());
    assert!(
        events
            .iter()
            .any(|f| f.name == "properties.$browser" && f.source == FieldSource::PropertyDefinition),
        "event property definitions are listed"
    );
    let persons = fields(&client, Entity::Persons).await.unwrap();
    assert!(persons.iter().any(|f| f.name == "is_identified"));
    let flags = fields(&client, Entity::FeatureFlags).await.unwrap();
    let key = flags
        .iter()
        .find(|f| f.name == "key")
        .expect("documented key");
    assert_eq!(key.kind, "string");
    assert!(
        flags.iter().any(|f| f.source == FieldSource::Sample),
        "keys of a listed flag beyond the documented ones"
    );
    let sessions = fields(&client, Entity::Sessions).await.unwrap();
    assert!(sessions.iter().any(|f| f.name == "$session_duration"));
}

/// Required variables for templates that have no default for them.
fn required_vars(name: &str) -> Vec<(&'static str, &'static str)> {
    match name {
        "experiment_results" => vec![("flag_key", "exp-flag"), ("goal_event", "purchase")],
        "feature_impact" => vec![("event", "$pageview"), ("property", "$browser")],
        "funnel_conversion" => vec![("step_1", "$pageview"), ("step_2", "$autocapture")],
        "property_values" => vec![("event", "$pageview"), ("property", "$browser")],
        "user_timeline" => vec![("distinct_id", "nobody")],
        _ => Vec::new(),
    }
}

async fn run(client: &posthog_client::Client, name: &str, vars: &[(&str, &str)]) -> QueryResult {
    let template = templates::find(name).unwrap();
    let query = template.bind(vars.iter().copied()).unwrap();
    client
        .query(&query)
        .await
        .unwrap_or_else(|e| panic!("template {name}: {e}"))
}

#[tokio::test]
async fn every_template_runs_with_its_defaults() {
    let mock = mock_serving(recent_dataset()).await;
    let client = client(&mock);
    for template in templates::all() {
        let result = run(&client, template.name, &required_vars(template.name)).await;
        assert!(!result.columns.is_empty(), "{}", template.name);
    }
}

fn rows(result: &QueryResult) -> Vec<BTreeMap<String, Value>> {
    result
        .rows::<BTreeMap<String, Value>>()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test]
async fn templates_answer_what_the_raw_events_say() {
    let dataset = recent_dataset();
    let events = dataset.events.clone();
    let mock = mock_serving(dataset).await;
    let client = client(&mock);

    // top_events over a window holding every event: counts per name.
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for e in &events {
        *counts.entry(e.event.as_str()).or_default() += 1;
    }
    let top = rows(&run(&client, "top_events", &[("days", "30"), ("limit", "3")]).await);
    let mut expected: Vec<(&str, u64)> = counts.into_iter().collect();
    expected.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let got: Vec<(String, u64)> = top
        .iter()
        .map(|r| {
            (
                r["event"].as_str().unwrap().to_owned(),
                r["events"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, u64)> = expected[..3]
        .iter()
        .map(|(e, n)| ((*e).to_owned(), *n))
        .collect();
    assert_eq!(got, want);

    // funnel_conversion: first $pageview, then an $autocapture at or after it.
    let mut first_view: HashMap<&str, OffsetDateTime> = HashMap::new();
    let mut last_click: HashMap<&str, OffsetDateTime> = HashMap::new();
    for e in &events {
        let id = e.distinct_id.as_str();
        match e.event.as_str() {
            "$pageview" => {
                let at = first_view.entry(id).or_insert(e.timestamp);
                *at = (*at).min(e.timestamp);
            }
            "$autocapture" => {
                let at = last_click.entry(id).or_insert(e.timestamp);
                *at = (*at).max(e.timestamp);
            }
            _ => {}
        }
    }
    let converted = first_view
        .iter()
        .filter(|(id, first)| last_click.get(*id).is_some_and(|last| last >= *first))
        .count();
    let funnel = rows(
        &run(
            &client,
            "funnel_conversion",
            &required_vars("funnel_conversion"),
        )
        .await,
    );
    assert_eq!(funnel.len(), 1);
    assert_eq!(funnel[0]["entered"], json!(first_view.len()));
    assert_eq!(funnel[0]["converted"], json!(converted));

    // stickiness: every user appears in exactly one bucket.
    let users: BTreeSet<&str> = events.iter().map(|e| e.distinct_id.as_str()).collect();
    let sticky = rows(&run(&client, "stickiness", &[]).await);
    let total: u64 = sticky.iter().map(|r| r["users"].as_u64().unwrap()).sum();
    assert_eq!(total, users.len() as u64);

    // churn_risk: users whose last event is more than 7 days old.
    let cutoff = OffsetDateTime::now_utc() - Duration::from_secs(7 * 86_400);
    let mut last_seen: HashMap<&str, OffsetDateTime> = HashMap::new();
    for e in &events {
        let at = last_seen
            .entry(e.distinct_id.as_str())
            .or_insert(e.timestamp);
        *at = (*at).max(e.timestamp);
    }
    let at_risk: BTreeSet<&str> = last_seen
        .iter()
        .filter(|(_, at)| **at < cutoff)
        .map(|(id, _)| *id)
        .collect();
    let churn = rows(&run(&client, "churn_risk", &[("limit", "1000")]).await);
    let got: BTreeSet<&str> = churn
        .iter()
        .map(|r| r["distinct_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, at_risk);
}

#[tokio::test]
async fn experiment_results_count_exposures_and_conversions_per_variant() {
    let mock = mock_serving(recent_dataset()).await;
    let now = OffsetDateTime::now_utc() - Duration::from_secs(3600);
    let mut extra = Vec::new();
    let mut add = |i: u128, who: &str, event: &str, variant: Option<&str>| {
        let mut properties = serde_json::Map::new();
        if let Some(v) = variant {
            properties.insert("$feature/exp-flag".into(), json!(v));
        }
        extra.push(Event {
            uuid: uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + i),
            event: event.into(),
            distinct_id: who.into(),
            timestamp: now + Duration::from_secs(i as u64),
            created_at: now + Duration::from_secs(i as u64),
            person_id: None,
            properties,
            elements_chain: String::new(),
            person_properties: serde_json::Map::new(),
        });
    };
    add(1, "a", "$pageview", Some("control"));
    add(2, "a", "purchase", None);
    add(3, "b", "$pageview", Some("control"));
    add(4, "c", "$pageview", Some("test"));
    add(5, "c", "purchase", Some("test"));
    add(6, "d", "$pageview", Some("test"));
    add(7, "e", "$pageview", Some("test"));
    add(8, "e", "purchase", None);
    mock.insert_events(extra);
    let result = rows(
        &run(
            &client(&mock),
            "experiment_results",
            &required_vars("experiment_results"),
        )
        .await,
    );
    let by_variant: BTreeMap<&str, (u64, u64)> = result
        .iter()
        .map(|r| {
            (
                r["variant"].as_str().unwrap(),
                (
                    r["users"].as_u64().unwrap(),
                    r["converted"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(by_variant["control"], (2, 1));
    assert_eq!(by_variant["test"], (3, 2));
}

#[tokio::test]
async fn an_injection_through_a_template_variable_is_a_constant_that_matches_nothing() {
    let mock = mock_serving(recent_dataset()).await;
    let client = client(&mock);
    let attack = "x' OR 1=1 --";
    let result = run(&client, "user_timeline", &[("distinct_id", attack)]).await;
    assert!(
        result.is_empty(),
        "the attack matched rows: {:?}",
        result.results
    );
    let sent = mock
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.route == RouteClass::Query)
        .unwrap()
        .body
        .unwrap();
    assert_eq!(
        sent["query"]["query"],
        templates::find("user_timeline").unwrap().hogql,
        "the query text is the template's, untouched"
    );
    assert_eq!(sent["query"]["values"]["distinct_id"], attack);
}
