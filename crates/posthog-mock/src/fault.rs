//! Route classes and the faults a test can script per class.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde_json::{Value, json};

/// What kind of endpoint a request hit; faults and counters are kept per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteClass {
    /// `POST …/query/`
    Query,
    /// `GET`/`DELETE …/query/{id}/`
    QueryStatus,
    /// `GET …/projects/{id}/`
    Project,
    /// `GET /api/users/@me/`
    Me,
    /// `…/cohorts/`
    Cohorts,
    /// `…/feature_flags/`
    FeatureFlags,
    /// `…/insights/`
    Insights,
    /// `…/annotations/`
    Annotations,
    /// `…/experiments/`
    Experiments,
    /// `…/persons/`
    Persons,
    /// `…/property_definitions/`
    PropertyDefinitions,
    /// `…/event_definitions/`
    EventDefinitions,
    /// `POST /i/v0/e/`
    Capture,
    /// `POST /batch/`
    Batch,
    /// `POST /flags`
    Flags,
    /// `/_mock/…` control API (never faulted, not counted in totals).
    Control,
    /// Anything else (404).
    Other,
}

impl RouteClass {
    /// Every class, in declaration order.
    pub const ALL: [RouteClass; 17] = [
        RouteClass::Query,
        RouteClass::QueryStatus,
        RouteClass::Project,
        RouteClass::Me,
        RouteClass::Cohorts,
        RouteClass::FeatureFlags,
        RouteClass::Insights,
        RouteClass::Annotations,
        RouteClass::Experiments,
        RouteClass::Persons,
        RouteClass::PropertyDefinitions,
        RouteClass::EventDefinitions,
        RouteClass::Capture,
        RouteClass::Batch,
        RouteClass::Flags,
        RouteClass::Control,
        RouteClass::Other,
    ];

    /// The snake_case name used by the control API (`query_status`, `feature_flags`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            RouteClass::Query => "query",
            RouteClass::QueryStatus => "query_status",
            RouteClass::Project => "project",
            RouteClass::Me => "me",
            RouteClass::Cohorts => "cohorts",
            RouteClass::FeatureFlags => "feature_flags",
            RouteClass::Insights => "insights",
            RouteClass::Annotations => "annotations",
            RouteClass::Experiments => "experiments",
            RouteClass::Persons => "persons",
            RouteClass::PropertyDefinitions => "property_definitions",
            RouteClass::EventDefinitions => "event_definitions",
            RouteClass::Capture => "capture",
            RouteClass::Batch => "batch",
            RouteClass::Flags => "flags",
            RouteClass::Control => "control",
            RouteClass::Other => "other",
        }
    }

    /// Whether the class belongs to the private API (personal key, throttled).
    pub fn is_private_api(self) -> bool {
        !matches!(
            self,
            RouteClass::Capture
                | RouteClass::Batch
                | RouteClass::Flags
                | RouteClass::Control
                | RouteClass::Other
        )
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for RouteClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown route class name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown route class `{0}`")]
pub struct UnknownRouteClass(pub String);

impl FromStr for RouteClass {
    type Err = UnknownRouteClass;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RouteClass::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownRouteClass(s.to_owned()))
    }
}

/// A scripted misbehaviour, consumed by the next request of its route class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status. `body` defaults to PostHog's error JSON for the status.
    Status {
        /// HTTP status.
        status: u16,
        /// `Retry-After` header value, if any.
        retry_after: Option<String>,
        /// Raw body; `None` for the PostHog-shaped default.
        body: Option<String>,
    },
    /// Close the connection without any response.
    ConnectionReset,
    /// Wait, then answer normally.
    Delay(Duration),
    /// Send the real answer's headers with the full `Content-Length` but only half the body,
    /// then close the connection.
    TruncatedBody,
    /// Answer 200 with `content-type: application/json` and a body that is not JSON.
    MalformedJson,
}

/// A fault description the control API could not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid fault: {0}")]
pub struct InvalidFault(pub String);

impl Fault {
    /// `status` with the default PostHog body and no `Retry-After`.
    pub fn status(status: u16) -> Fault {
        Fault::Status {
            status,
            retry_after: None,
            body: None,
        }
    }

    /// 429 with the throttled body and an optional `Retry-After`.
    pub fn too_many(retry_after: Option<&str>) -> Fault {
        Fault::Status {
            status: 429,
            retry_after: retry_after.map(str::to_owned),
            body: None,
        }
    }

    /// A delay of `ms` milliseconds.
    pub fn delay_ms(ms: u64) -> Fault {
        Fault::Delay(Duration::from_millis(ms))
    }

    /// Reads the control API's JSON form: `{"type":"status","status":503,"retry_after":"2",
    /// "body":null}`, `{"type":"connection_reset"}`, `{"type":"delay","ms":1500}`,
    /// `{"type":"truncated_body"}`, `{"type":"malformed_json"}`. `{"status":503}` alone is a
    /// status fault.
    pub fn from_json(v: &Value) -> Result<Fault, InvalidFault> {
        let obj = v
            .as_object()
            .ok_or_else(|| InvalidFault("expected an object".into()))?;
        let kind =
            obj.get("type")
                .and_then(Value::as_str)
                .unwrap_or(if obj.contains_key("status") {
                    "status"
                } else {
                    ""
                });
        match kind {
            "status" => {
                let status = obj
                    .get("status")
                    .and_then(Value::as_u64)
                    .and_then(|s| u16::try_from(s).ok())
                    .filter(|s| (100..=999).contains(s))
                    .ok_or_else(|| InvalidFault("`status` must be an HTTP status code".into()))?;
                let retry_after = match obj.get("retry_after") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(Value::Number(n)) => Some(n.to_string()),
                    Some(_) => return Err(InvalidFault("`retry_after` must be a string".into())),
                };
                let body = obj.get("body").and_then(Value::as_str).map(str::to_owned);
                Ok(Fault::Status {
                    status,
                    retry_after,
                    body,
                })
            }
            "connection_reset" | "reset" => Ok(Fault::ConnectionReset),
            "delay" => {
                let ms = obj
                    .get("ms")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| InvalidFault("`delay` needs `ms`".into()))?;
                Ok(Fault::delay_ms(ms))
            }
            "truncated_body" => Ok(Fault::TruncatedBody),
            "malformed_json" => Ok(Fault::MalformedJson),
            other => Err(InvalidFault(format!("unknown fault type `{other}`"))),
        }
    }

    /// The control API's JSON form.
    pub fn to_json(&self) -> Value {
        match self {
            Fault::Status {
                status,
                retry_after,
                body,
            } => {
                json!({"type": "status", "status": status, "retry_after": retry_after, "body": body})
            }
            Fault::ConnectionReset => json!({"type": "connection_reset"}),
            Fault::Delay(d) => {
                json!({"type": "delay", "ms": u64::try_from(d.as_millis()).unwrap_or(u64::MAX)})
            }
            Fault::TruncatedBody => json!({"type": "truncated_body"}),
            Fault::MalformedJson => json!({"type": "malformed_json"}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_round_trip_through_json() {
        for f in [
            Fault::status(503),
            Fault::too_many(Some("2")),
            Fault::ConnectionReset,
            Fault::delay_ms(150),
            Fault::TruncatedBody,
            Fault::MalformedJson,
        ] {
            assert_eq!(Fault::from_json(&f.to_json()).unwrap(), f);
        }
        assert_eq!(
            Fault::from_json(&json!({"status": 500})).unwrap(),
            Fault::status(500)
        );
        assert!(Fault::from_json(&json!({"type": "explode"})).is_err());
    }

    #[test]
    fn route_class_names_round_trip() {
        for c in RouteClass::ALL {
            assert_eq!(c.as_str().parse::<RouteClass>().unwrap(), c);
            assert_eq!(RouteClass::ALL[c.index()], c);
        }
    }
}
