//! Lists the template catalogue, then runs `churn_risk` with one variable changed and prints
//! the users at risk.
//!
//! ```sh
//! POSTHOG_PERSONAL_API_KEY=phx_... POSTHOG_PROJECT_ID=12345 \
//!     cargo run -p posthog-agent --example templates
//! ```

use posthog_agent::templates;
use posthog_client::{Client, Region};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    for template in templates::all() {
        let params: Vec<&str> = template.params.iter().map(|p| p.name).collect();
        println!(
            "{:<22} {:<12} {}",
            template.name,
            template.category,
            params.join(", ")
        );
    }
    let client = Client::builder()
        .region(Region::Us)
        .personal_api_key(std::env::var("POSTHOG_PERSONAL_API_KEY")?)
        .project_id(std::env::var("POSTHOG_PROJECT_ID")?)
        .build()?;
    // Variables are checked (type, range) and bound as values: "14" becomes the integer 14.
    let query = templates::find("churn_risk")
        .ok_or("no churn_risk template")?
        .bind([("inactive_days", "14"), ("limit", "20")])?;
    #[derive(serde::Deserialize)]
    struct AtRisk {
        distinct_id: String,
        last_seen: String,
        events: u64,
    }
    let result = client.query(&query).await?;
    for row in result.rows::<AtRisk>() {
        let row = row?;
        println!(
            "{} last seen {} ({} events)",
            row.distinct_id, row.last_seen, row.events
        );
    }
    Ok(())
}
