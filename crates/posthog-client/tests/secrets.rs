//! Keys never appear in logs (TRACE level, `verbose_http` on), errors or `Debug` output.

mod util;

use std::io::Write;
use std::sync::{Arc, Mutex};

use futures_util::TryStreamExt;
use posthog_client::{CaptureEvent, FlagsRequest, HogQlQuery};
use posthog_mock::{Fault, RouteClass};
use tracing_subscriber::fmt::MakeWriter;
use util::{PERSONAL_KEY, PROJECT_KEY, builder, mock};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The secret part of each key (after the prefix): what must never be written anywhere.
fn secret_parts() -> [&'static str; 2] {
    [&PERSONAL_KEY[4..], &PROJECT_KEY[4..]]
}

fn assert_clean(what: &str, text: &str) {
    for secret in secret_parts() {
        assert!(!text.contains(secret), "{what} leaked a key:\n{text}");
    }
}

#[tokio::test]
async fn keys_never_reach_trace_logs_errors_or_debug_output() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mock = mock().await;
    let client = builder(&mock).verbose_http(true).build().unwrap();
    let mut shown = vec![format!("{client:?}")];

    client
        .query(&HogQlQuery::new(
            "select uuid, properties from events limit 5",
        ))
        .await
        .unwrap();
    let _: Vec<serde_json::Value> = client.cohorts().try_collect().await.unwrap();
    client.capture(&CaptureEvent::new("e", "d")).await.unwrap();
    client
        .capture_batch(&[CaptureEvent::new("e", "d")])
        .await
        .unwrap();
    client
        .evaluate_flags(&FlagsRequest::new("d"))
        .await
        .unwrap();

    // A server that echoes the key back in an error body, then a retry.
    mock.push_fault(
        RouteClass::Query,
        Fault::Status {
            status: 500,
            retry_after: None,
            body: Some(format!(
                r#"{{"detail":"bad key {PERSONAL_KEY} / {PROJECT_KEY}"}}"#
            )),
        },
    );
    client
        .query(&HogQlQuery::new("select uuid from events limit 1"))
        .await
        .unwrap();
    // The same echo on a final, non-retryable error.
    mock.push_fault(
        RouteClass::Query,
        Fault::Status {
            status: 400,
            retry_after: None,
            body: Some(format!(
                r#"{{"type":"validation_error","code":"invalid_input","detail":"{PERSONAL_KEY}","attr":null}}"#
            )),
        },
    );
    let err = client
        .query(&HogQlQuery::new("select 1"))
        .await
        .unwrap_err();
    shown.push(format!("{err} {err:?}"));

    // A wrong key: PostHog answers 401; the key we sent must not show up anywhere.
    let wrong = builder(&mock)
        .personal_api_key("phx_WrongButStillSecret")
        .verbose_http(true)
        .build()
        .unwrap();
    let err = wrong.project().await.unwrap_err();
    shown.push(format!("{err} {err:?}"));

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("posthog.request") && logs.contains("request body"),
        "TRACE logging with verbose_http was captured:\n{logs}"
    );
    assert!(
        logs.contains("phc_***"),
        "the capture body was logged, redacted"
    );
    assert_clean("trace logs", &logs);
    assert!(!logs.contains("WrongButStillSecret"));
    for text in shown {
        assert_clean("an error or Debug output", &text);
        assert!(!text.contains("WrongButStillSecret"), "{text}");
    }
}
