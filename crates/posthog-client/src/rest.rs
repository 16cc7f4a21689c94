//! REST endpoints: DRF-paginated lists as streams, project info and the current user.
//!
//! A list is a [`Stream`] that follows DRF's `next` links page by page, so callers never handle
//! offsets, and memory holds one page at a time. A `next` link that points to another host is
//! refused: the key must never travel anywhere but the configured base URL.
//!
//! A `next` link must also make progress, so a server cannot keep a stream going forever over
//! the same items: its `offset` must be a non-negative integer (of any length: compared as
//! digits, never parsed into a machine integer) greater than the current page's, and a link
//! already followed in this stream is refused. `count` is read as a `u64`; a negative,
//! fractional or out-of-range `count` is a [`Error::Decode`] naming it. The client does no
//! arithmetic on `count`, `limit` or `offset`.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use futures_core::Stream;
use futures_util::stream::{self, TryStreamExt};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::client::Client;
use crate::error::Error;
use crate::ratelimit::EndpointClass;
use crate::transport::Request;

/// A paginated collection of the private API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Resource {
    /// `cohorts/`
    Cohorts,
    /// `feature_flags/`
    FeatureFlags,
    /// `insights/`
    Insights,
    /// `annotations/`
    Annotations,
    /// `experiments/`
    Experiments,
    /// `persons/` (rate limited as an analytics endpoint)
    Persons,
    /// `property_definitions/`
    PropertyDefinitions,
    /// `event_definitions/`
    EventDefinitions,
}

impl Resource {
    /// Every resource, in a stable order.
    pub const ALL: [Resource; 8] = [
        Resource::Cohorts,
        Resource::FeatureFlags,
        Resource::Insights,
        Resource::Annotations,
        Resource::Experiments,
        Resource::Persons,
        Resource::PropertyDefinitions,
        Resource::EventDefinitions,
    ];

    /// The collection's path segment below `/api/projects/{id}/`.
    pub fn path(self) -> &'static str {
        match self {
            Resource::Cohorts => "cohorts",
            Resource::FeatureFlags => "feature_flags",
            Resource::Insights => "insights",
            Resource::Annotations => "annotations",
            Resource::Experiments => "experiments",
            Resource::Persons => "persons",
            Resource::PropertyDefinitions => "property_definitions",
            Resource::EventDefinitions => "event_definitions",
        }
    }

    /// The rate-limit class PostHog applies to it.
    pub fn class(self) -> EndpointClass {
        match self {
            Resource::Persons | Resource::Insights => EndpointClass::Analytics,
            _ => EndpointClass::Crud,
        }
    }
}

/// Options of a list request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListParams {
    /// Items per page (`limit`); PostHog's default is 100.
    pub page_size: Option<u32>,
    /// Extra query parameters, e.g. `("type", "event")` for property definitions.
    pub filters: Vec<(String, String)>,
}

impl ListParams {
    /// Sets the page size.
    pub fn page_size(mut self, size: u32) -> Self {
        self.page_size = Some(size);
        self
    }

    /// Adds a query-string filter.
    pub fn filter(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.filters.push((key.into(), value.into()));
        self
    }
}

/// One page of a DRF list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Page<T> {
    /// Total items, when the endpoint reports it.
    #[serde(default)]
    pub count: Option<u64>,
    /// Absolute URL of the next page.
    #[serde(default)]
    pub next: Option<String>,
    /// The page's items.
    pub results: Vec<T>,
}

/// A property definition (`property_definitions/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PropertyDefinition {
    /// PostHog's id.
    #[serde(default)]
    pub id: Option<Value>,
    /// The property's name, e.g. `$browser`.
    pub name: String,
    /// `DateTime`, `String`, `Numeric`, `Boolean` or `Duration`, when PostHog knows it.
    #[serde(default)]
    pub property_type: Option<String>,
    /// Whether PostHog has seen numeric values.
    #[serde(default)]
    pub is_numerical: Option<bool>,
    /// Everything else PostHog sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Which properties to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyKind {
    /// Event properties.
    Event,
    /// Person properties.
    Person,
}

/// The items of a stream of pages, one page in memory at a time.
fn items<T>(
    pages: impl Stream<Item = Result<Page<T>, Error>>,
) -> impl Stream<Item = Result<T, Error>> {
    pages
        .map_ok(|page| stream::iter(page.results.into_iter().map(Ok)))
        .try_flatten()
}

/// A cohort to create with [`Client::create_cohort`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewCohort {
    /// Display name (required).
    pub name: String,
    /// Free-text description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// PostHog's cohort filters, e.g. `{"properties": {"type": "AND", "values": [...]}}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filters: Option<Value>,
    /// A static cohort holds an uploaded list of persons instead of filters.
    pub is_static: bool,
}

impl NewCohort {
    /// A dynamic cohort with a name and no filters yet.
    pub fn new(name: impl Into<String>) -> Self {
        NewCohort {
            name: name.into(),
            description: None,
            filters: None,
            is_static: false,
        }
    }

    /// Sets the filters.
    pub fn filters(mut self, filters: Value) -> Self {
        self.filters = Some(filters);
        self
    }

    /// Sets the description.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }
}

/// The project (`GET /api/projects/{id}/`).
///
/// PostHog includes the project API key (`api_token`, `phc_…`) in `extra`; `Debug` output
/// redacts every key-shaped string, so printing a project never shows it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Project {
    /// Numeric id.
    pub id: i64,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// IANA time zone of the project, e.g. `Europe/Prague`.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Everything else PostHog sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Project {
    /// The project API key (`phc_…`, PostHog's `api_token`) that capture and flag evaluation
    /// need, when PostHog included it.
    pub fn api_token(&self) -> Option<&str> {
        self.extra
            .get("api_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
    }
}

impl std::fmt::Debug for Project {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let extra = crate::redact::redact_secrets(&Value::Object(self.extra.clone()).to_string())
            .into_owned();
        f.debug_struct("Project")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("timezone", &self.timezone)
            .field("extra", &extra)
            .finish()
    }
}

/// The user the key belongs to (`GET /api/users/@me/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurrentUser {
    /// The user's UUID.
    #[serde(default)]
    pub uuid: Option<String>,
    /// The user's email.
    #[serde(default)]
    pub email: Option<String>,
    /// Everything else PostHog sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Client {
    /// Streams the pages of a list, following `next` links.
    ///
    /// ```no_run
    /// # async fn demo(client: posthog_client::Client) -> Result<(), posthog_client::Error> {
    /// use futures_util::TryStreamExt;
    /// use posthog_client::{ListParams, Resource};
    /// let pages = client.list_pages::<serde_json::Value>(Resource::Cohorts, ListParams::default());
    /// let pages: Vec<_> = pages.try_collect().await?;
    /// # Ok(()) }
    /// ```
    pub fn list_pages<T: DeserializeOwned + Send + 'static>(
        &self,
        resource: Resource,
        params: ListParams,
    ) -> impl Stream<Item = Result<Page<T>, Error>> + Send + 'static {
        let first = self.first_page_url(&format!("/{}/", resource.path()), &params);
        self.pages_from(first, resource.class())
    }

    /// Streams pages starting at `first`, following `next` links.
    fn pages_from<T: DeserializeOwned + Send + 'static>(
        &self,
        first: Result<Url, Error>,
        class: EndpointClass,
    ) -> impl Stream<Item = Result<Page<T>, Error>> + Send + 'static {
        let client = self.clone();
        // Hashes of the pages already fetched: a cycle of `next` links ends with an error
        // instead of streaming the same items forever. 8 bytes a page.
        let visited = HashSet::<u64>::new();
        stream::try_unfold((Some(first), visited), move |(next, mut visited)| {
            let client = client.clone();
            async move {
                let Some(url) = next else { return Ok(None) };
                let url = url?;
                if !visited.insert(url_hash(&url)) {
                    return Err(Error::Decode {
                        endpoint: format!("GET {}", url.path()),
                        message: "pagination links lead back to a page already read".into(),
                    });
                }
                let response = client
                    .execute(Request {
                        method: Method::GET,
                        url: url.clone(),
                        class,
                        body: None,
                        personal_auth: true,
                        retry_timeouts: true,
                        idempotent: true,
                    })
                    .await?;
                let page: Page<T> = response.json()?;
                let next = match page.next.as_deref() {
                    Some(link) => Some(client.follow(&url, link, &response.endpoint)),
                    None => None,
                };
                Ok(Some((page, (next, visited))))
            }
        })
    }

    /// Streams every item of a list, one page in memory at a time.
    pub fn list<T: DeserializeOwned + Send + 'static>(
        &self,
        resource: Resource,
        params: ListParams,
    ) -> impl Stream<Item = Result<T, Error>> + Send + 'static {
        items(self.list_pages::<T>(resource, params))
    }

    /// Cohorts, as JSON objects.
    pub fn cohorts(&self) -> impl Stream<Item = Result<Value, Error>> + Send + 'static {
        self.list(Resource::Cohorts, ListParams::default())
    }

    /// Feature flags, as JSON objects.
    pub fn feature_flags(&self) -> impl Stream<Item = Result<Value, Error>> + Send + 'static {
        self.list(Resource::FeatureFlags, ListParams::default())
    }

    /// Persons, as JSON objects.
    pub fn persons(&self) -> impl Stream<Item = Result<Value, Error>> + Send + 'static {
        self.list(Resource::Persons, ListParams::default())
    }

    /// Insights (saved trends, funnels, …), as JSON objects.
    pub fn insights(&self) -> impl Stream<Item = Result<Value, Error>> + Send + 'static {
        self.list(Resource::Insights, ListParams::default())
    }

    /// Annotations, as JSON objects.
    pub fn annotations(&self) -> impl Stream<Item = Result<Value, Error>> + Send + 'static {
        self.list(Resource::Annotations, ListParams::default())
    }

    /// Experiments, as JSON objects.
    pub fn experiments(&self) -> impl Stream<Item = Result<Value, Error>> + Send + 'static {
        self.list(Resource::Experiments, ListParams::default())
    }

    /// The persons in one cohort (`GET …/cohorts/{id}/persons/`), one page in memory at a time.
    ///
    /// ```no_run
    /// # async fn demo(client: posthog_client::Client) -> Result<(), posthog_client::Error> {
    /// use futures_util::TryStreamExt;
    /// let persons: Vec<serde_json::Value> = client.cohort_persons(42, None).try_collect().await?;
    /// # Ok(()) }
    /// ```
    pub fn cohort_persons(
        &self,
        cohort_id: u64,
        page_size: Option<u32>,
    ) -> impl Stream<Item = Result<Value, Error>> + Send + 'static {
        let params = ListParams {
            page_size,
            filters: Vec::new(),
        };
        let first = self.first_page_url(&format!("/cohorts/{cohort_id}/persons/"), &params);
        items(self.pages_from::<Value>(first, EndpointClass::Analytics))
    }

    /// Creates a cohort (`POST …/cohorts/`) and returns it as PostHog stored it (with its `id`).
    ///
    /// Creating is not idempotent, so the request is retried only after a 429 (PostHog throttles
    /// before doing anything); any other failure is returned at once and the caller should list
    /// cohorts before trying again.
    ///
    /// ```no_run
    /// # async fn demo(client: posthog_client::Client) -> Result<(), posthog_client::Error> {
    /// use posthog_client::NewCohort;
    /// let filters = serde_json::json!({"properties": {"type": "AND", "values": [
    ///     {"key": "plan", "value": "pro", "type": "person", "operator": "exact"}]}});
    /// let cohort = client.create_cohort(&NewCohort::new("Pro users").filters(filters)).await?;
    /// println!("created cohort {}", cohort["id"]);
    /// # Ok(()) }
    /// ```
    pub async fn create_cohort(&self, cohort: &NewCohort) -> Result<Value, Error> {
        if cohort.name.trim().is_empty() {
            return Err(Error::InvalidRequest {
                message: "a cohort needs a non-empty name".into(),
            });
        }
        if let Some(filters) = &cohort.filters
            && !filters.is_object()
        {
            return Err(Error::InvalidRequest {
                message: "cohort filters must be a JSON object, e.g. {\"properties\": {...}}"
                    .into(),
            });
        }
        let body = serde_json::to_vec(cohort).map_err(|e| Error::InvalidRequest {
            message: format!("cohort cannot be serialized: {e}"),
        })?;
        self.execute(Request {
            method: Method::POST,
            url: self.project_url("/cohorts/")?,
            class: EndpointClass::Crud,
            body: Some(body.into()),
            personal_auth: true,
            retry_timeouts: false,
            idempotent: false,
        })
        .await?
        .json()
    }

    /// Property definitions of one kind.
    pub fn property_definitions(
        &self,
        kind: PropertyKind,
    ) -> impl Stream<Item = Result<PropertyDefinition, Error>> + Send + 'static {
        let kind = match kind {
            PropertyKind::Event => "event",
            PropertyKind::Person => "person",
        };
        self.list(
            Resource::PropertyDefinitions,
            ListParams::default().filter("type", kind),
        )
    }

    /// The configured project.
    pub async fn project(&self) -> Result<Project, Error> {
        self.get_json(self.project_url("/")?, EndpointClass::Crud)
            .await
    }

    /// The user the personal API key belongs to; a cheap authentication check.
    pub async fn current_user(&self) -> Result<CurrentUser, Error> {
        self.get_json(self.api_url("/api/users/@me/"), EndpointClass::Crud)
            .await
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        url: Url,
        class: EndpointClass,
    ) -> Result<T, Error> {
        self.execute(Request {
            method: Method::GET,
            url,
            class,
            body: None,
            personal_auth: true,
            retry_timeouts: true,
            idempotent: true,
        })
        .await?
        .json()
    }

    fn first_page_url(&self, path: &str, params: &ListParams) -> Result<Url, Error> {
        let mut url = self.project_url(path)?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(size) = params.page_size {
                query.append_pair("limit", &size.to_string());
            }
            for (k, v) in &params.filters {
                query.append_pair(k, v);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        Ok(url)
    }

    /// Resolves a `next` link, refusing one that leaves the API's origin or goes nowhere.
    fn follow(&self, current: &Url, link: &str, endpoint: &str) -> Result<Url, Error> {
        let bad = |message: String| Error::Decode {
            endpoint: endpoint.to_owned(),
            message,
        };
        let mut next = current
            .join(link)
            .map_err(|e| bad(format!("pagination link {link:?} is not a URL: {e}")))?;
        let base = &self.inner.api_base;
        if next.host_str() != base.host_str() {
            return Err(bad(format!(
                "pagination link points to another host ({}); refusing to send credentials there",
                next.host_str().unwrap_or("none")
            )));
        }
        // A proxy may render links as http:// behind TLS termination: keep our own scheme
        // and port so the key never goes out in clear text.
        if next.scheme() != base.scheme() {
            next.set_scheme(base.scheme())
                .and_then(|()| next.set_port(base.port()))
                .map_err(|()| bad("cannot rewrite the link's scheme".into()))?;
        }
        if next.port_or_known_default() != base.port_or_known_default() {
            return Err(bad(format!(
                "pagination link points to another port ({:?}); refusing to send credentials there",
                next.port_or_known_default()
            )));
        }
        if &next == current {
            return Err(bad("pagination link points to the same page again".into()));
        }
        check_offset_advances(current, &next).map_err(bad)?;
        Ok(next)
    }
}

fn url_hash(url: &Url) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    url.as_str().hash(&mut hasher);
    hasher.finish()
}

/// The `offset` query parameter of a URL, if any.
fn offset_of(url: &Url) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == "offset")
        .map(|(_, v)| v.into_owned())
}

/// A `next` link with an `offset` must move forward: DRF reads an offset that is not a
/// non-negative integer as 0 (the first page again), and one that does not grow repeats items.
/// Offsets are compared as decimal digits, so no value can overflow.
fn check_offset_advances(current: &Url, next: &Url) -> Result<(), String> {
    let Some(to) = offset_of(next) else {
        return Ok(());
    };
    let shown = |v: &str| v.chars().take(40).collect::<String>();
    let digits = |v: &str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
    if !digits(&to) {
        return Err(format!(
            "pagination link has offset {:?}, not a non-negative integer",
            shown(&to)
        ));
    }
    let from = offset_of(current).unwrap_or_else(|| "0".to_owned());
    if digits(&from) && cmp_decimal(&to, &from) != std::cmp::Ordering::Greater {
        return Err(format!(
            "pagination link does not advance: offset {} after offset {}",
            shown(&to),
            shown(&from)
        ));
    }
    Ok(())
}

/// Compares two strings of ASCII digits as the numbers they write, whatever their length.
fn cmp_decimal(a: &str, b: &str) -> std::cmp::Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_compare_as_numbers_of_any_length() {
        use std::cmp::Ordering::*;
        assert_eq!(cmp_decimal("10", "9"), Greater);
        assert_eq!(cmp_decimal("007", "7"), Equal);
        assert_eq!(cmp_decimal("0", "000"), Equal);
        let huge = format!("1{}", "0".repeat(400));
        assert_eq!(cmp_decimal(&huge, "18446744073709551615"), Greater);
        assert_eq!(cmp_decimal("18446744073709551615", &huge), Less);

        let url = |q: &str| Url::parse(&format!("https://h/api/projects/1/cohorts/{q}")).unwrap();
        assert!(check_offset_advances(&url(""), &url("?offset=100")).is_ok());
        assert!(
            check_offset_advances(&url("?offset=100"), &url(&format!("?offset={huge}"))).is_ok()
        );
        assert!(check_offset_advances(&url("?cursor=a"), &url("?cursor=b")).is_ok());
        for (from, to) in [
            ("", "?offset=0"),
            ("?offset=100", "?offset=100"),
            ("?offset=100", "?offset=99"),
        ] {
            let err = check_offset_advances(&url(from), &url(to)).unwrap_err();
            assert!(err.contains("does not advance"), "{from} → {to}: {err}");
        }
        for to in ["?offset=-1", "?offset=1e3", "?offset=", "?offset=%2B5"] {
            let err = check_offset_advances(&url(""), &url(to)).unwrap_err();
            assert!(err.contains("not a non-negative integer"), "{to}: {err}");
        }
    }

    #[test]
    fn project_debug_output_never_shows_the_project_api_key() {
        let project: Project = serde_json::from_value(serde_json::json!({
            "id": 1, "name": "p", "timezone": "UTC", "api_token": "phc_SecretToken123"
        }))
        .unwrap();
        assert_eq!(project.api_token(), Some("phc_SecretToken123"));
        let shown = format!("{project:?}");
        assert!(!shown.contains("SecretToken123"), "{shown}");
        assert!(shown.contains("phc_***"), "{shown}");
    }
}

/// DRF pages as outside input: whatever a list endpoint sends, a page or a [`Error::Decode`]
/// naming the endpoint (and the value at fault), never a panic; a `next` link is followed only
/// to the configured origin.
#[cfg(test)]
mod parse_props {
    use bytes::Bytes;
    use proptest::prelude::*;
    use serde_json::json;
    use serde_json::value::RawValue;

    use super::*;
    use crate::test_support::json_value;
    use crate::transport::Response;

    const ENDPOINT: &str = "GET /api/projects/1/cohorts/";

    fn response(body: Vec<u8>) -> Response {
        Response {
            status: 200,
            body: Bytes::from(body),
            endpoint: ENDPOINT.into(),
        }
    }

    fn real_page() -> Value {
        json!({
            "count": 3,
            "next": "https://posthog.example.com/api/projects/1/cohorts/?limit=2&offset=2",
            "previous": null,
            "results": [
                {"id": 1, "name": "Pro users", "filters": {"properties": {"type": "AND", "values": []}},
                 "is_static": false, "count": 120, "created_at": "2025-01-02T13:57:30.178957Z"},
                {"id": 2, "name": "Beta \u{e9}", "filters": null, "is_static": true, "count": null}
            ]
        })
    }

    /// Parses as both item types the crate reads pages into: JSON objects (agents) and raw
    /// slices (the extractor). What reads as objects reads as slices; slices also take nesting
    /// deeper than serde_json's recursion limit (they are skipped over, not built).
    fn parse(body: &[u8]) -> Result<Page<Value>, Error> {
        let response = response(body.to_vec());
        let values = response.json::<Page<Value>>();
        let raws = response.json::<Page<Box<RawValue>>>();
        if let Err(err) = &raws {
            assert_decode_error(err);
            assert!(values.is_err(), "objects read where slices did not: {err}");
        }
        if let Err(err) = &values {
            assert_decode_error(err);
        }
        values
    }

    fn assert_decode_error(err: &Error) -> String {
        assert!(matches!(err, Error::Decode { .. }), "{err:?}");
        assert_eq!(err.category(), crate::Category::Data);
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "unexpected response from {ENDPOINT}: invalid JSON body: "
            )),
            "{msg}"
        );
        msg
    }

    /// One client for every case: building one (TLS roots) takes milliseconds.
    fn client() -> Client {
        static CLIENT: std::sync::LazyLock<Client> = std::sync::LazyLock::new(|| {
            Client::builder()
                .base_url("https://posthog.example.com")
                .unwrap()
                .personal_api_key("phx_test_key")
                .project_id("1")
                .build()
                .unwrap()
        });
        CLIENT.clone()
    }

    /// A `next` link: relative or absolute, to our origin or elsewhere, well formed or not.
    fn link() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[a-z/?=&.:%-]{0,30}",
            Just("https://posthog.example.com/api/projects/1/cohorts/?offset=2".to_owned()),
            Just("http://posthog.example.com/api/projects/1/cohorts/?offset=2".to_owned()),
            Just("https://posthog.example.com:8443/api/projects/1/cohorts/".to_owned()),
            Just("//evil.example.net/steal".to_owned()),
            Just("https://posthog.example.com.evil.net/".to_owned()),
            Just("https://user:pass@posthog.example.com/x".to_owned()),
            Just("?offset=4".to_owned()),
            Just("".to_owned()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_are_a_decode_error_or_a_page(body in any::<Vec<u8>>()) {
            let _ = parse(&body);
        }

        /// One field of a real page replaced by any JSON value: a page (the value is acceptable)
        /// or an error naming the field.
        #[test]
        fn a_wrong_value_in_a_field_is_refused_naming_it(
            field in prop::sample::select(vec!["count", "next", "results"]),
            value in json_value("https://evil.example.net/api/projects/1/cohorts/?offset=2"),
        ) {
            let mut page = real_page();
            page[field] = value;
            if let Err(err) = parse(&serde_json::to_vec(&page).unwrap()) {
                let msg = assert_decode_error(&err);
                prop_assert!(msg.contains(&format!("body: {field}")), "{}", msg);
            }
        }

        /// Bytes of a real page flipped, dropped or inserted (invalid UTF-8 included).
        #[test]
        fn mutated_pages_are_a_decode_error_or_a_page(
            edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 1..6),
        ) {
            let mut body = serde_json::to_vec(&real_page()).unwrap();
            for (at, kind, byte) in edits {
                let i = at.index(body.len());
                match kind {
                    0 => body[i] = byte,
                    1 => { body.remove(i); }
                    _ => body.insert(i, byte),
                }
            }
            let _ = parse(&body);
        }

        /// A valid page reads back as written.
        #[test]
        fn valid_pages_round_trip(
            count in prop::option::of(any::<u64>()),
            next in prop::option::of("[a-z/?=&]{0,20}"),
            ids in prop::collection::vec(any::<i64>(), 0..5),
        ) {
            let results: Vec<Value> = ids.iter().map(|id| json!({"id": id})).collect();
            let body = serde_json::to_vec(&json!({"count": count, "next": next, "results": results})).unwrap();
            let page = parse(&body).expect("valid page");
            prop_assert_eq!(page, Page { count, next, results });
        }

        /// Whatever `next` says, following it gives a URL on the configured origin (scheme, host
        /// and port) that is not the current page, or a decode error naming the endpoint.
        #[test]
        fn next_links_stay_on_the_configured_origin(link in link()) {
            let client = client();
            let current = Url::parse("https://posthog.example.com/api/projects/1/cohorts/?limit=2").unwrap();
            match client.follow(&current, &link, ENDPOINT) {
                Ok(next) => {
                    prop_assert_eq!(next.scheme(), "https");
                    prop_assert_eq!(next.host_str(), Some("posthog.example.com"));
                    prop_assert_eq!(next.port_or_known_default(), Some(443));
                    prop_assert_ne!(next, current);
                }
                Err(err) => {
                    prop_assert!(matches!(err, Error::Decode { .. }), "{:?}", err);
                    prop_assert!(err.to_string().contains(ENDPOINT), "{}", err);
                }
            }
        }
    }

    #[test]
    fn every_truncation_of_a_real_page_is_a_decode_error() {
        let body = serde_json::to_vec(&real_page()).unwrap();
        assert!(parse(&body).is_ok());
        for cut in 0..body.len() {
            let err = parse(&body[..cut]).expect_err("a truncated page");
            let msg = assert_decode_error(&err);
            assert!(msg.contains("EOF while parsing"), "cut at {cut}: {msg}");
        }
    }

    #[test]
    fn deep_nesting_huge_numbers_and_missing_results() {
        let deep = format!(
            r#"{{"results":[{}{}]}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let msg = assert_decode_error(&parse(deep.as_bytes()).unwrap_err());
        assert!(msg.contains("recursion limit"), "{msg}");
        let msg = assert_decode_error(&parse(br#"{"count": 1e400, "results": []}"#).unwrap_err());
        assert!(msg.contains("number out of range"), "{msg}");
        let msg = assert_decode_error(&parse(br#"{"count": -1, "results": []}"#).unwrap_err());
        assert!(
            msg.contains("body: count: invalid value: integer `-1`"),
            "{msg}"
        );
        let msg = assert_decode_error(&parse(br#"{"next": null}"#).unwrap_err());
        assert!(msg.contains("missing field `results`"), "{msg}");
        let msg = assert_decode_error(&parse(b"<html>502 Bad Gateway</html>").unwrap_err());
        assert!(msg.contains("expected value at line 1 column 1"), "{msg}");
    }

    #[test]
    fn links_to_other_origins_are_refused() {
        let client = client();
        let current = Url::parse("https://posthog.example.com/api/projects/1/cohorts/").unwrap();
        for link in [
            "https://evil.example.net/api/projects/1/cohorts/?offset=2",
            "//evil.example.net/x",
            "https://posthog.example.com:8443/x",
        ] {
            let err = client.follow(&current, link, ENDPOINT).unwrap_err();
            assert!(
                err.to_string().contains("refusing to send credentials"),
                "{link}: {err}"
            );
        }
        let err = client.follow(&current, "", ENDPOINT).unwrap_err();
        assert!(err.to_string().contains("same page again"), "{err}");
        let next = client
            .follow(
                &current,
                "http://posthog.example.com/api/projects/1/cohorts/?offset=2",
                ENDPOINT,
            )
            .unwrap();
        assert_eq!(
            next.as_str(),
            "https://posthog.example.com/api/projects/1/cohorts/?offset=2"
        );
    }
}
