//! A scan's planning query ([`KeysetQuery::summary`]) run against the mock: the count and the
//! quantiles it answers are those of exactly the rows the scan's pages read, computed here from
//! the mock's dataset with ClickHouse's rules.

mod util;

use posthog_client::{KeysetFilter, KeysetQuery, KeysetStart, Micros, RangeSummary};
use posthog_mock::{Dataset, GenSpec, MockConfig, MockServer};
use util::{PERSONAL_KEY, PROJECT_ID, PROJECT_KEY, client};

const LEVELS: [f64; 7] = [0.0, 0.1, 0.25, 0.333, 0.5, 0.9, 1.0];

async fn mock_serving(dataset: Dataset) -> MockServer {
    MockServer::start(MockConfig {
        personal_api_key: PERSONAL_KEY.into(),
        project_api_key: PROJECT_KEY.into(),
        project_id: PROJECT_ID,
        dataset,
        ..MockConfig::default()
    })
    .await
    .expect("mock starts")
}

fn micros(at: time::OffsetDateTime) -> Micros {
    Micros::try_from(at.unix_timestamp_nanos() / 1000).unwrap()
}

/// ClickHouse's quantile of a DateTime64 over sorted instants: position `level × (n − 1)`,
/// linear interpolation between its neighbours, the step taken exactly and truncated toward
/// zero to a microsecond.
fn quantile(sorted: &[Micros], level: f64) -> Micros {
    let last = sorted.len() - 1;
    let index = (level * last as f64).clamp(0.0, last as f64);
    let left = index as usize;
    if left >= last {
        return sorted[last];
    }
    let fraction = index - left as f64;
    let step = i128::from(sorted[left + 1] - sorted[left]);
    // `fraction` is exactly `mantissa × 2^exponent`: multiply exactly, then truncate.
    let bits = fraction.to_bits();
    let (mantissa, exponent) = match (bits >> 52) & 0x7ff {
        0 => (bits & ((1 << 52) - 1), -1074),
        e => ((bits & ((1 << 52) - 1)) | (1 << 52), e as i32 - 1075),
    };
    let shift = u32::try_from(-exponent).expect("a fraction below 1");
    let product = if shift >= 127 {
        0
    } else {
        (step * i128::from(mantissa)) >> shift
    };
    sorted[left] + i64::try_from(product).unwrap()
}

#[tokio::test]
async fn the_plan_counts_and_splits_exactly_the_rows_the_pages_read() {
    let spec = GenSpec {
        seed: 11,
        events: 600,
        persons: 20,
        same_timestamp_cluster: 5,
        ..GenSpec::default()
    };
    let dataset = Dataset::generate(&spec);
    let events = dataset.events.clone();
    let mock = mock_serving(dataset).await;
    let client = client(&mock);

    let mut all: Vec<Micros> = events.iter().map(|e| micros(e.timestamp)).collect();
    all.sort_unstable();
    let (from, until) = (all[all.len() / 5], all[all.len() * 4 / 5]);
    let query = KeysetQuery::new("events", ["uuid", "timestamp"], "uuid")
        .time_column("timestamp")
        .filter(KeysetFilter::new("event = {event_0}").value("event_0", "$pageview"))
        .filter(KeysetFilter::before("timestamp", "until", until));

    let mut expected: Vec<Micros> = events
        .iter()
        .filter(|e| e.event == "$pageview")
        .map(|e| micros(e.timestamp))
        .filter(|t| (from..until).contains(t))
        .collect();
    expected.sort_unstable();
    assert!(
        expected.len() > 50,
        "{} rows is too few to test",
        expected.len()
    );

    let plan = query
        .summary(&KeysetStart::AtOrAfter(from), &LEVELS)
        .unwrap();
    let answer = client.query(&plan).await.expect("the plan runs");
    let summary = RangeSummary::from_result(&answer).expect("the plan's answer reads");
    assert_eq!(summary.rows, expected.len() as u64);
    let quantiles: Vec<Micros> = LEVELS.iter().map(|l| quantile(&expected, *l)).collect();
    assert_eq!(summary.quantiles, quantiles);
    assert_eq!(summary.quantiles[0], expected[0]);
    assert_eq!(summary.quantiles[6], *expected.last().unwrap());
    assert!(summary.quantiles.iter().all(|t| (from..until).contains(t)));

    // The count is what the pages read from the same start.
    let page = client
        .query(&query.page(&KeysetStart::AtOrAfter(from), 10_000))
        .await
        .unwrap();
    assert_eq!(page.len() as u64, summary.rows);

    // Planning from a cursor: the rows strictly after it.
    let last_row = &page.results[page.len() / 2];
    let cursor = posthog_client::KeysetCursor::from_text(
        last_row[1].as_str(),
        last_row[0].as_str().unwrap(),
    )
    .unwrap();
    let start = KeysetStart::After(cursor);
    let plan = query.summary(&start, &[0.5]).unwrap();
    let summary = RangeSummary::from_result(&client.query(&plan).await.unwrap()).unwrap();
    let rest = client.query(&query.page(&start, 10_000)).await.unwrap();
    assert_eq!(summary.rows, rest.len() as u64);
    assert_eq!(summary.rows, (page.len() - page.len() / 2 - 1) as u64);

    // Without levels: the count alone.
    let plan = query.summary(&KeysetStart::AtOrAfter(from), &[]).unwrap();
    let summary = RangeSummary::from_result(&client.query(&plan).await.unwrap()).unwrap();
    assert_eq!(summary.rows, expected.len() as u64);
    assert!(summary.quantiles.is_empty());

    // An empty range: no rows, no instants.
    let plan = query
        .summary(&KeysetStart::AtOrAfter(until), &LEVELS)
        .unwrap();
    let summary = RangeSummary::from_result(&client.query(&plan).await.unwrap()).unwrap();
    assert_eq!(
        summary,
        RangeSummary {
            rows: 0,
            quantiles: Vec::new()
        }
    );
}
