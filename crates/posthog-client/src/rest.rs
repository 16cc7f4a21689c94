//! REST endpoints: DRF-paginated lists as streams, project info and the current user.
//!
//! A list is a [`Stream`] that follows DRF's `next` links page by page, so callers never handle
//! offsets, and memory holds one page at a time. A `next` link that points to another host is
//! refused: the key must never travel anywhere but the configured base URL.

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
        stream::try_unfold(Some(first), move |next| {
            let client = client.clone();
            async move {
                let Some(url) = next else { return Ok(None) };
                let url = url?;
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
                Ok(Some((page, next)))
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
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
