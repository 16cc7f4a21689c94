//! Runs a HogQL query with a bound value, then the same query asynchronously (queued and
//! polled, for queries longer than one request's timeout).
//!
//! ```sh
//! POSTHOG_PERSONAL_API_KEY=phx_... POSTHOG_PROJECT_ID=12345 POSTHOG_HOST=https://eu.posthog.com \
//!     cargo run -p posthog-client --example query
//! ```

use posthog_client::{Client, HogQlQuery, Region};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = client_from_env()?;
    let query = HogQlQuery::new(
        "select properties.$browser as browser, count() as n from events \
         where event = {event} group by browser order by n desc limit 5",
    )
    .value("event", "$pageview");
    let result = client.query(&query).await?;
    println!("{:?}", result.columns);
    for row in &result.results {
        println!("{row:?}");
    }
    let queued = client.query(&query.asynchronous()).await?;
    assert_eq!(queued.results.len(), result.results.len());
    Ok(())
}

/// A client from `POSTHOG_PERSONAL_API_KEY`, `POSTHOG_PROJECT_ID` and `POSTHOG_HOST` (a base
/// URL; PostHog Cloud US when unset). The library never reads the environment; programs do.
fn client_from_env() -> Result<Client, Box<dyn std::error::Error>> {
    let region = match std::env::var("POSTHOG_HOST") {
        Ok(url) => Region::self_hosted(&url)?,
        Err(_) => Region::Us,
    };
    Ok(Client::builder()
        .region(region)
        .personal_api_key(std::env::var("POSTHOG_PERSONAL_API_KEY")?)
        .project_id(std::env::var("POSTHOG_PROJECT_ID")?)
        .build()?)
}
