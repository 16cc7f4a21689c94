//! Feature-flag evaluation for one person through `POST /flags?v=2` on the ingestion host.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::client::Client;
use crate::error::Error;
use crate::ratelimit::EndpointClass;
use crate::transport::Request;

/// Whom to evaluate flags for.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FlagsRequest {
    /// The person's distinct id.
    pub distinct_id: String,
    /// Group memberships, group type → group key.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub groups: Map<String, Value>,
    /// Person properties to evaluate with, overriding stored ones.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub person_properties: Map<String, Value>,
}

impl FlagsRequest {
    /// Flags for one distinct id.
    pub fn new(distinct_id: impl Into<String>) -> Self {
        FlagsRequest {
            distinct_id: distinct_id.into(),
            ..FlagsRequest::default()
        }
    }
}

/// The evaluated flags.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FlagsResponse {
    /// Flag key → evaluation.
    #[serde(default)]
    pub flags: BTreeMap<String, FlagEvaluation>,
    /// Whether PostHog failed to compute some flags (their values may be missing).
    #[serde(default, rename = "errorsWhileComputingFlags")]
    pub errors_while_computing_flags: bool,
    /// PostHog's request id, for support.
    #[serde(default, rename = "requestId")]
    pub request_id: Option<String>,
    /// Resources over quota, when any.
    #[serde(default, rename = "quotaLimited")]
    pub quota_limited: Option<Vec<String>>,
}

/// One flag's evaluation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FlagEvaluation {
    /// The flag key.
    pub key: String,
    /// Whether the flag is on for this person.
    pub enabled: bool,
    /// The variant, for multivariate flags.
    #[serde(default)]
    pub variant: Option<String>,
    /// Why it evaluated this way.
    #[serde(default)]
    pub reason: Option<FlagReason>,
    /// Flag id, version and payload.
    #[serde(default)]
    pub metadata: Option<Value>,
}

/// Why a flag evaluated as it did.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FlagReason {
    /// E.g. `condition_match`, `out_of_rollout_bound`, `no_condition_match`.
    pub code: String,
    /// Which condition matched.
    #[serde(default)]
    pub condition_index: Option<u32>,
    /// Human-readable explanation.
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Serialize)]
struct FlagsBody<'a> {
    api_key: &'a str,
    #[serde(flatten)]
    request: &'a FlagsRequest,
}

impl Client {
    /// Evaluates every flag for one person.
    pub async fn evaluate_flags(&self, request: &FlagsRequest) -> Result<FlagsResponse, Error> {
        if request.distinct_id.is_empty() {
            return Err(Error::InvalidRequest {
                message: "flag evaluation needs a distinct_id".into(),
            });
        }
        let body = serde_json::to_vec(&FlagsBody {
            api_key: self.project_key()?,
            request,
        })
        .map_err(|e| Error::InvalidRequest {
            message: format!("flag request cannot be serialized: {e}"),
        })?;
        let mut url = self.ingest_url("/flags");
        url.set_query(Some("v=2"));
        self.execute(Request {
            method: Method::POST,
            url,
            class: EndpointClass::Public,
            body: Some(body.into()),
            personal_auth: false,
            retry_timeouts: true,
            idempotent: true,
        })
        .await?
        .json()
    }
}
