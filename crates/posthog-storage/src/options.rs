//! How to reach a store: the non-secret options from the config and the environment the CLI
//! read, which this crate never reads itself.

use std::fmt;
use std::time::Duration;

use secrecy::SecretString;

/// How to connect to an object store.
///
/// The explicit options (`output.storage` in the config: endpoint, region, allow_http)
/// override what [`environment`](StorageOptions::environment) says.
#[derive(Clone)]
pub struct StorageOptions {
    /// The store's endpoint, for S3-compatible stores (MinIO, R2, Ceph) or emulators: overrides
    /// `AWS_ENDPOINT_URL`. For GCS, the base URL; for Azure, the account URL.
    pub endpoint: Option<String>,
    /// The S3 region: overrides `AWS_REGION` / `AWS_DEFAULT_REGION` (object_store assumes
    /// `us-east-1` when neither says).
    pub region: Option<String>,
    /// Whether plain `http://` endpoints are allowed (a local MinIO): overrides
    /// `AWS_ALLOW_HTTP`.
    pub allow_http: Option<bool>,
    /// The process environment as the CLI read it: every `(NAME, value)` whose `NAME` starts
    /// with `AWS_`, `GOOGLE_` or `AZURE_`. The values are secrets; each store reads its own
    /// prefix, as object_store's `from_env` would, and ignores names it does not know.
    pub environment: Vec<(String, SecretString)>,
    /// How long object_store keeps retrying a request that failed with throttling, a 5xx or a
    /// connection error (default 60 s).
    pub retry_timeout: Duration,
    /// How many times object_store retries such a request (default 6).
    pub max_retries: usize,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            endpoint: None,
            region: None,
            allow_http: None,
            environment: Vec::new(),
            retry_timeout: Duration::from_secs(60),
            max_retries: 6,
        }
    }
}

impl fmt::Debug for StorageOptions {
    /// The environment's names only, never its values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.environment.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("StorageOptions")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("allow_http", &self.allow_http)
            .field("environment", &names)
            .field("retry_timeout", &self.retry_timeout)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_names_the_environment_but_never_shows_a_value() {
        let options = StorageOptions {
            region: Some("eu-west-1".into()),
            environment: vec![
                ("AWS_ACCESS_KEY_ID".into(), "AKIAEXAMPLEKEYID".into()),
                (
                    "AWS_SECRET_ACCESS_KEY".into(),
                    "wJalrXUtnFEMI-very-secret".into(),
                ),
            ],
            ..StorageOptions::default()
        };
        let shown = format!("{options:?} {options:#?}");
        assert!(shown.contains("AWS_SECRET_ACCESS_KEY"), "{shown}");
        assert!(shown.contains("eu-west-1"), "{shown}");
        for secret in ["AKIAEXAMPLEKEYID", "wJalrXUtnFEMI-very-secret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn defaults_are_the_documented_retry_budget() {
        let options = StorageOptions::default();
        assert_eq!(options.retry_timeout, Duration::from_secs(60));
        assert_eq!(options.max_retries, 6);
    }
}
