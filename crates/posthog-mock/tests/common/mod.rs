//! Shared harness for the integration tests: start a server, send HogQL, read JSON.

#![allow(dead_code)]

use posthog_mock::{MockConfig, MockServer};
use serde_json::{Value, json};

pub const KEY: &str = "phx_mock_personal_key";

/// A started server and an HTTP client pointed at it.
pub struct Harness {
    pub server: MockServer,
    pub http: reqwest::Client,
}

impl Harness {
    pub async fn start(config: MockConfig) -> Harness {
        let server = MockServer::start(config).await.expect("server starts");
        Harness {
            server,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base_url())
    }

    /// GET with the personal key; status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(self.url(path))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("request succeeds");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// GET an absolute URL with the personal key.
    pub async fn get_abs(&self, url: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(url)
            .bearer_auth(KEY)
            .send()
            .await
            .expect("request succeeds");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// POST JSON to a path with the personal key.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .bearer_auth(KEY)
            .json(body)
            .send()
            .await
            .expect("request succeeds");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Runs a HogQL query on project 1.
    pub async fn query(&self, sql: &str, values: Value) -> (u16, Value) {
        self.query_with(json!({"kind": "HogQLQuery", "query": sql, "values": values}))
            .await
    }

    /// Runs a query object on project 1.
    pub async fn query_with(&self, query: Value) -> (u16, Value) {
        self.post(
            "/api/projects/1/query/",
            &json!({"query": query, "name": "test"}),
        )
        .await
    }
}

/// Column `i` of every result row.
pub fn column(body: &Value, i: usize) -> Vec<Value> {
    body["results"]
        .as_array()
        .expect("results array")
        .iter()
        .map(|r| r[i].clone())
        .collect()
}
