//! Event capture through the public ingestion API (`/i/v0/e/` and `/batch/`), authenticated
//! with the project API key in the body.
//!
//! Every event carries a `uuid` chosen when the event is created. PostHog deduplicates on it,
//! so a batch that is retried after a lost response does not create duplicates. Batches are
//! split so no body exceeds PostHog's 20 MB request limit.

use reqwest::Method;
use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::client::Client;
use crate::error::Error;
use crate::ratelimit::EndpointClass;
use crate::transport::Request;

/// PostHog rejects request bodies over 20 MB (`DATA_UPLOAD_MAX_MEMORY_SIZE`); we stay a little
/// below it.
pub const MAX_BODY_BYTES: usize = 20 * 1000 * 1000 - 64 * 1024;

/// An event to capture.
///
/// ```
/// use posthog_client::CaptureEvent;
/// let event = CaptureEvent::new("signed_up", "user-42").property("plan", "pro");
/// assert_eq!(event.properties["plan"], "pro");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaptureEvent {
    /// Event name.
    pub event: String,
    /// Who did it.
    pub distinct_id: String,
    /// Event properties.
    pub properties: Map<String, Value>,
    /// When it happened; PostHog uses the time of receipt when absent.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub timestamp: Option<OffsetDateTime>,
    /// Idempotency key, chosen at creation.
    pub uuid: Uuid,
}

impl CaptureEvent {
    /// A new event with a fresh UUID.
    pub fn new(event: impl Into<String>, distinct_id: impl Into<String>) -> Self {
        CaptureEvent {
            event: event.into(),
            distinct_id: distinct_id.into(),
            properties: Map::new(),
            timestamp: None,
            uuid: Uuid::new_v4(),
        }
    }

    /// Adds a property.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// Sets the event time.
    pub fn timestamp(mut self, at: OffsetDateTime) -> Self {
        self.timestamp = Some(at);
        self
    }

    /// Sets the idempotency key (e.g. one derived from the source record).
    pub fn uuid(mut self, uuid: Uuid) -> Self {
        self.uuid = uuid;
        self
    }
}

/// What [`Client::capture_batch`] sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Events sent.
    pub events: usize,
    /// `/batch/` requests it took.
    pub requests: usize,
}

#[derive(Serialize)]
struct SingleBody<'a> {
    api_key: &'a str,
    #[serde(flatten)]
    event: &'a CaptureEvent,
}

impl Client {
    /// Captures one event (`POST /i/v0/e/`).
    pub async fn capture(&self, event: &CaptureEvent) -> Result<(), Error> {
        validate(event)?;
        let body = serde_json::to_vec(&SingleBody {
            api_key: self.project_key()?,
            event,
        })
        .map_err(serialize_error)?;
        if body.len() > self.inner.max_batch_bytes {
            return Err(too_large(event, body.len(), self.inner.max_batch_bytes));
        }
        self.send_capture("/i/v0/e/", body).await
    }

    /// Captures many events through `POST /batch/`, in as few requests as the body limit
    /// allows. Every event is checked and encoded before the first request, so bad input sends
    /// nothing. Events are sent in order; on a network or server error, the events of earlier
    /// requests were accepted and re-sending all of them is safe (their UUIDs deduplicate).
    pub async fn capture_batch(&self, events: &[CaptureEvent]) -> Result<BatchReport, Error> {
        const TAIL: &[u8] = b"]}";
        let api_key = self.project_key()?;
        let limit = self.inner.max_batch_bytes;
        let head = format!(
            r#"{{"api_key":{},"historical_migration":false,"batch":["#,
            Value::from(api_key)
        );
        let encoded = events
            .iter()
            .map(|event| {
                validate(event)?;
                let bytes = serde_json::to_vec(event).map_err(serialize_error)?;
                let alone = head.len() + bytes.len() + TAIL.len();
                if alone > limit {
                    return Err(too_large(event, alone, limit));
                }
                Ok(bytes)
            })
            .collect::<Result<Vec<_>, Error>>()?;

        let mut report = BatchReport::default();
        let mut rest = encoded.as_slice();
        while !rest.is_empty() {
            let mut body = head.clone().into_bytes();
            // The first event always fits: each was checked against the limit on its own.
            let mut taken = 0;
            for event in rest {
                let separator = usize::from(taken > 0);
                if taken > 0 && body.len() + separator + event.len() + TAIL.len() > limit {
                    break;
                }
                if taken > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(event);
                taken += 1;
            }
            body.extend_from_slice(TAIL);
            self.send_capture("/batch/", body).await?;
            report.requests += 1;
            report.events += taken;
            rest = &rest[taken..];
        }
        Ok(report)
    }

    async fn send_capture(&self, path: &str, body: Vec<u8>) -> Result<(), Error> {
        self.execute(Request {
            method: Method::POST,
            url: self.ingest_url(path),
            class: EndpointClass::Public,
            body: Some(body.into()),
            personal_auth: false,
            retry_timeouts: true,
            idempotent: true,
        })
        .await
        .map(drop)
    }
}

fn validate(event: &CaptureEvent) -> Result<(), Error> {
    if event.event.is_empty() {
        return Err(Error::InvalidRequest {
            message: format!("event {} has an empty name", event.uuid),
        });
    }
    if event.distinct_id.is_empty() {
        return Err(Error::InvalidRequest {
            message: format!("event {} has an empty distinct_id", event.uuid),
        });
    }
    Ok(())
}

fn too_large(event: &CaptureEvent, size: usize, limit: usize) -> Error {
    Error::InvalidRequest {
        message: format!(
            "event {} ({:?}) encodes to {size} bytes, over the {limit} byte request limit",
            event.uuid, event.event
        ),
    }
}

fn serialize_error(e: serde_json::Error) -> Error {
    Error::InvalidRequest {
        message: format!("event cannot be serialized: {e}"),
    }
}
