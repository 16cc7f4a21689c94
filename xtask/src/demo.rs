//! `cargo xtask demo`: a real job against the mock PostHog, with no credentials.
//!
//! It starts `posthog-mock` on loopback with generated events, then uses `posthog-client` the
//! way the extractor will: a keyset scan over `(timestamp, uuid)` that reads every event exactly
//! once, a request that survives injected faults, and paginated REST listings.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures_util::TryStreamExt;
use posthog_client::{Client, HogQlQuery, ListParams, RateLimits, Resource, RetryPolicy};
use posthog_mock::{Dataset, Fault, GenSpec, MockConfig, MockServer, RouteClass};
use serde_json::Value;

/// Options of `cargo xtask demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Events the mock generates.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Rows per keyset page.
    #[arg(long, default_value_t = 5_000)]
    page_size: usize,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    // PostHog clamps LIMIT to 50 000 silently; a larger page would end the scan early.
    ensure!(
        (1..=50_000).contains(&args.page_size),
        "--page-size {} is out of range 1..=50000",
        args.page_size
    );
    let config = MockConfig {
        dataset: Dataset::generate(&GenSpec {
            seed: 42,
            events: args.events,
            same_timestamp_cluster: args.events.min(1_500),
            ..GenSpec::default()
        }),
        ..MockConfig::default()
    };
    let keys = (
        config.personal_api_key.clone(),
        config.project_api_key.clone(),
        config.project_id,
    );
    let tz = config.timezone.name.clone();
    let mock = MockServer::start(config)
        .await
        .context("starting the mock")?;
    println!(
        "mock PostHog on {} ({} events, project time zone {tz})",
        mock.base_url(),
        args.events
    );

    let client = Client::builder()
        .base_url(&mock.base_url())?
        .personal_api_key(keys.0)
        .project_api_key(keys.1)
        .project_id(keys.2.to_string())
        .rate_limits(RateLimits::unlimited())
        .retry_policy(RetryPolicy {
            initial_delay: Duration::from_millis(50),
            ..RetryPolicy::default()
        })
        .build()?;

    keyset_scan(&client, args.events, args.page_size).await?;
    survive_faults(&client, &mock).await?;
    rest_listings(&client).await?;

    let stats = client.stats();
    println!(
        "\nclient stats: {} requests, {} retries, {} throttled, {} breaker trips",
        stats.requests, stats.retries, stats.throttled, stats.breaker_trips
    );
    mock.shutdown().await;
    Ok(())
}

/// Reads every event once by keyset pagination on `(timestamp, uuid)`, as the extractor does.
async fn keyset_scan(client: &Client, expected: usize, page_size: usize) -> anyhow::Result<()> {
    println!("\n1. HogQL keyset scan of `events`, {page_size} rows per page");
    let started = Instant::now();
    let mut seen = HashSet::with_capacity(expected);
    let mut cursor: Option<(String, String)> = None;
    let mut pages = 0;
    loop {
        let query = match &cursor {
            None => HogQlQuery::new(format!(
                "select uuid, event, timestamp, distinct_id from events \
                 order by timestamp, uuid limit {page_size}"
            )),
            Some((ts, uuid)) => HogQlQuery::new(format!(
                "select uuid, event, timestamp, distinct_id from events \
                 where (timestamp, uuid) > (toDateTime({{ts}}), toUUID({{uuid}})) \
                 order by timestamp, uuid limit {page_size}"
            ))
            .value("ts", ts.as_str())
            .value("uuid", uuid.as_str()),
        };
        let page = client.query(&query).await?;
        pages += 1;
        if pages == 1 {
            println!("   first rows (timestamps in UTC, as the client asks):");
            for row in page.results.iter().take(3) {
                println!(
                    "     {}  {:<14} {}",
                    text(&row[2]),
                    text(&row[1]),
                    text(&row[0])
                );
            }
        }
        for row in &page.results {
            if !seen.insert(text(&row[0]).to_owned()) {
                bail!("event {} was read twice", text(&row[0]));
            }
        }
        let Some(last) = page.results.last() else {
            break;
        };
        let next = (text(&last[2]).to_owned(), text(&last[0]).to_owned());
        if cursor.as_ref() == Some(&next) {
            bail!("the keyset cursor did not advance");
        }
        if page.len() < page_size {
            break;
        }
        cursor = Some(next);
    }
    ensure!(
        seen.len() == expected,
        "read {} events, the mock holds {expected}",
        seen.len()
    );
    println!(
        "   {} events in {pages} pages, each exactly once, in {} ms",
        seen.len(),
        started.elapsed().as_millis()
    );
    Ok(())
}

/// Injects a 503 and a 429 with `Retry-After: 1`; the client retries through both.
async fn survive_faults(client: &Client, mock: &MockServer) -> anyhow::Result<()> {
    println!("\n2. Resilience: the mock answers 503, then 429 with Retry-After: 1");
    mock.push_fault(RouteClass::Query, Fault::status(503));
    mock.push_fault(RouteClass::Query, Fault::too_many(Some("1")));
    let before = client.stats();
    let started = Instant::now();
    let result = client
        .query(&HogQlQuery::new(
            "select event, count() from events group by event order by count() desc limit 5",
        ))
        .await?;
    println!(
        "   succeeded after {} retries in {} ms; top events:",
        client.stats().retries - before.retries,
        started.elapsed().as_millis()
    );
    for row in &result.results {
        println!("     {:<16} {}", text(&row[0]), row[1]);
    }
    Ok(())
}

/// Lists cohorts and feature flags through DRF pagination.
async fn rest_listings(client: &Client) -> anyhow::Result<()> {
    println!("\n3. REST listings, following `next` links");
    let pages: Vec<_> = client
        .list_pages::<Value>(Resource::Cohorts, ListParams::default().page_size(3))
        .try_collect()
        .await?;
    let names: Vec<_> = pages
        .iter()
        .flat_map(|p| &p.results)
        .map(|c| text(&c["name"]).to_owned())
        .collect();
    println!(
        "   cohorts: {} over {} pages of 3: {}",
        names.len(),
        pages.len(),
        names.join(", ")
    );
    let flags: Vec<Value> = client.feature_flags().try_collect().await?;
    let keys: Vec<_> = flags.iter().map(|f| text(&f["key"])).collect();
    println!("   feature flags: {}: {}", flags.len(), keys.join(", "));
    let project = client.project().await?;
    println!(
        "   project {} ({}), time zone {}",
        project.id,
        project.name.as_deref().unwrap_or("unnamed"),
        project.timezone.as_deref().unwrap_or("unknown")
    );
    Ok(())
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("?")
}
