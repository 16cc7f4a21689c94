//! Captures a batch of events with idempotency keys, then evaluates the flags of one user.
//!
//! ```sh
//! POSTHOG_PROJECT_API_KEY=phc_... cargo run -p posthog-client --example capture_and_flags
//! ```

use posthog_client::{CaptureEvent, Client, FlagsRequest, Region};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::builder()
        .region(Region::Us)
        .project_api_key(std::env::var("POSTHOG_PROJECT_API_KEY")?)
        .build()?;
    let events: Vec<CaptureEvent> = (0..3)
        .map(|i| CaptureEvent::new("report_exported", "user-42").property("rows", i * 100))
        .collect();
    // Each event carries the UUID chosen here: sending the same batch again after a lost
    // response does not duplicate anything.
    let report = client.capture_batch(&events).await?;
    println!(
        "sent {} events in {} requests",
        report.events, report.requests
    );
    let flags = client.evaluate_flags(&FlagsRequest::new("user-42")).await?;
    for (key, flag) in &flags.flags {
        println!("{key}: enabled={} variant={:?}", flag.enabled, flag.variant);
    }
    Ok(())
}
