//! Creates a cohort of the persons on the `pro` plan and prints who is in it.
//!
//! ```sh
//! POSTHOG_PERSONAL_API_KEY=phx_... POSTHOG_PROJECT_ID=12345 \
//!     cargo run -p posthog-client --example cohorts
//! ```

use futures_util::TryStreamExt;
use posthog_client::{Client, NewCohort, PropertyKind, Region};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::builder()
        .region(Region::Us)
        .personal_api_key(std::env::var("POSTHOG_PERSONAL_API_KEY")?)
        .project_id(std::env::var("POSTHOG_PROJECT_ID")?)
        .build()?;
    // What can be filtered on: person properties as PostHog knows them.
    let mut definitions = Box::pin(client.property_definitions(PropertyKind::Person));
    while let Some(definition) = definitions.try_next().await? {
        let kind = definition.property_type.as_deref().unwrap_or("unknown");
        println!("{} ({kind})", definition.name);
    }
    let filters = json!({"properties": {"type": "AND", "values": [
        {"key": "plan", "value": "pro", "type": "person", "operator": "exact"}]}});
    let cohort = client
        .create_cohort(&NewCohort::new("Pro plan").filters(filters))
        .await?;
    let id = cohort["id"].as_u64().ok_or("cohort without an id")?;
    let mut persons = Box::pin(client.cohort_persons(id, None));
    while let Some(person) = persons.try_next().await? {
        println!("{}", person["id"]);
    }
    Ok(())
}
