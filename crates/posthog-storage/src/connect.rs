//! Building a store from [`StorageOptions`]: each environment entry of the store's prefix is
//! applied as object_store's own `from_env` would apply it (which this crate may not call: a
//! library reads no environment), then the explicit options on top.

use std::str::FromStr;
use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::{ClientConfigKey, ObjectStore, RetryConfig};
use secrecy::ExposeSecret as _;

use crate::{ObjectUrl, Scheme, StorageError, StorageOptions};

/// The store for `url`; no request is sent.
pub(crate) fn build_store(
    url: &ObjectUrl,
    options: &StorageOptions,
) -> Result<Arc<dyn ObjectStore>, StorageError> {
    let retry = RetryConfig {
        max_retries: options.max_retries,
        retry_timeout: options.retry_timeout,
        ..RetryConfig::default()
    };
    let built: object_store::Result<Arc<dyn ObjectStore>> = match url.scheme {
        Scheme::S3 => s3(url, options, retry).build().map(|s| Arc::new(s) as _),
        Scheme::Gcs => gcs(url, options, retry).build().map(|s| Arc::new(s) as _),
        Scheme::Azure => azure(url, options, retry).build().map(|s| Arc::new(s) as _),
    };
    built.map_err(|source| StorageError::Connect {
        url: url.to_string(),
        source: source.into(),
    })
}

/// The entries of `options.environment` named `<prefix>…` that parse as a config key `K`
/// once lower-cased, with their values; the others are ignored, as `from_env` ignores them.
fn environment<'a, K: FromStr>(
    options: &'a StorageOptions,
    prefix: &'a str,
) -> impl Iterator<Item = (K, &'a str)> + 'a {
    options.environment.iter().filter_map(move |(name, value)| {
        if !name.starts_with(prefix) {
            return None;
        }
        let key = name.to_ascii_lowercase().parse::<K>().ok()?;
        Some((key, value.expose_secret()))
    })
}

/// S3: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` /
/// `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL` (object_store reads `aws_endpoint_url` as the
/// endpoint), `AWS_ALLOW_HTTP` and the rest object_store knows; without keys, the instance,
/// container or web identity. Conditional puts use `If-Match` / `If-None-Match` on the ETag
/// (object_store 0.14's default, set explicitly so a future default cannot turn them off).
fn s3(url: &ObjectUrl, options: &StorageOptions, retry: RetryConfig) -> AmazonS3Builder {
    let mut builder = AmazonS3Builder::new();
    for (key, value) in environment::<AmazonS3ConfigKey>(options, "AWS_") {
        builder = builder.with_config(key, value);
    }
    // After the environment, so an AWS_BUCKET there cannot redirect the writes.
    builder = builder
        .with_bucket_name(&url.bucket)
        .with_retry(retry)
        .with_conditional_put(S3ConditionalPut::ETagMatch);
    if let Some(endpoint) = &options.endpoint {
        // AWS_ENDPOINT_URL_S3 would take precedence over the endpoint: the option must win.
        builder = builder
            .with_endpoint(endpoint)
            .with_config(AmazonS3ConfigKey::S3Endpoint, endpoint);
    }
    if let Some(region) = &options.region {
        builder = builder.with_region(region);
    }
    if let Some(allow_http) = options.allow_http {
        builder = builder.with_allow_http(allow_http);
    }
    builder
}

/// GCS: `GOOGLE_SERVICE_ACCOUNT` (a key file's path), `GOOGLE_SERVICE_ACCOUNT_KEY` (the key
/// itself), `GOOGLE_APPLICATION_CREDENTIALS` and the rest object_store knows; without them the
/// application-default credentials or the instance's. The endpoint option is the base URL.
fn gcs(url: &ObjectUrl, options: &StorageOptions, retry: RetryConfig) -> GoogleCloudStorageBuilder {
    let mut builder = GoogleCloudStorageBuilder::new();
    for (key, value) in environment::<GoogleConfigKey>(options, "GOOGLE_") {
        builder = builder.with_config(key, value);
    }
    builder = builder.with_bucket_name(&url.bucket).with_retry(retry);
    if let Some(endpoint) = &options.endpoint {
        builder = builder.with_config(GoogleConfigKey::BaseUrl, endpoint);
    }
    if let Some(allow_http) = options.allow_http {
        builder = builder.with_config(
            GoogleConfigKey::Client(ClientConfigKey::AllowHttp),
            allow_http.to_string(),
        );
    }
    builder
}

/// Azure: `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`, `AZURE_STORAGE_SAS_KEY`,
/// `AZURE_CLIENT_ID` / `AZURE_CLIENT_SECRET` / `AZURE_TENANT_ID` and the rest object_store
/// knows; the account of an `abfss://container@account…` URL wins over the environment's.
fn azure(url: &ObjectUrl, options: &StorageOptions, retry: RetryConfig) -> MicrosoftAzureBuilder {
    let mut builder = MicrosoftAzureBuilder::new();
    for (key, value) in environment::<AzureConfigKey>(options, "AZURE_") {
        builder = builder.with_config(key, value);
    }
    builder = builder.with_container_name(&url.bucket).with_retry(retry);
    if let Some(account) = &url.account {
        builder = builder.with_account(account);
    }
    if let Some(endpoint) = &options.endpoint {
        builder = builder.with_endpoint(endpoint.clone());
    }
    if let Some(allow_http) = options.allow_http {
        builder = builder.with_allow_http(allow_http);
    }
    builder
}

#[cfg(test)]
mod tests {
    use posthog_error::Category;
    use secrecy::SecretString;

    use super::*;
    use crate::{Bucket, Location};

    fn url(text: &str) -> ObjectUrl {
        match Location::parse(text).unwrap() {
            Location::Object(url) => url,
            Location::Local(_) => panic!("{text} is an object URL"),
        }
    }

    fn env(entries: &[(&str, &str)]) -> StorageOptions {
        StorageOptions {
            environment: entries
                .iter()
                .map(|(n, v)| ((*n).to_owned(), SecretString::from(*v)))
                .collect(),
            ..StorageOptions::default()
        }
    }

    #[test]
    fn s3_builds_from_the_environment_and_options_without_a_request() {
        let options = StorageOptions {
            endpoint: Some("http://127.0.0.1:9".into()),
            region: Some("eu-west-1".into()),
            allow_http: Some(true),
            ..env(&[
                ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
                ("AWS_SECRET_ACCESS_KEY", "secret"),
                ("AWS_SESSION_TOKEN", "token"),
                ("AWS_DEFAULT_REGION", "us-west-2"),
                ("AWS_ENDPOINT_URL", "https://elsewhere.example"),
                ("AWS_PROFILE", "ignored: not an object_store key"),
                ("AWS_BUCKET", "not-this-one"),
            ])
        };
        let bucket = Bucket::connect(&url("s3://lake/p"), &options).unwrap();
        let shown = format!("{bucket:?}");
        assert!(shown.contains("lake"), "{shown}");
        assert!(!shown.contains("not-this-one"), "{shown}");
        // Without any credentials, object_store falls back to the instance identity, which it
        // asks for only at the first request.
        Bucket::connect(&url("s3://lake"), &StorageOptions::default()).unwrap();
    }

    #[test]
    fn s3_with_half_a_key_pair_is_a_config_error() {
        let err = Bucket::connect(
            &url("s3://lake/p"),
            &env(&[("AWS_SECRET_ACCESS_KEY", "secret-value")]),
        )
        .unwrap_err();
        assert!(matches!(err, StorageError::Connect { .. }), "{err}");
        assert_eq!(err.category(), Category::Config);
        let chain = posthog_error::ErrorChain::new(&err).to_string();
        assert!(chain.contains("s3://lake/p"), "{chain}");
        assert!(!chain.contains("secret-value"), "{chain}");
    }

    #[test]
    fn gcs_builds_from_a_service_account_key_and_refuses_a_malformed_one() {
        let key = r#"{"private_key": "unused", "private_key_id": "k1",
            "client_email": "svc@project.iam.gserviceaccount.com", "disable_oauth": true}"#;
        let options = StorageOptions {
            endpoint: Some("http://127.0.0.1:9".into()),
            allow_http: Some(true),
            ..env(&[("GOOGLE_SERVICE_ACCOUNT_KEY", key)])
        };
        Bucket::connect(&url("gs://lake/p"), &options).unwrap();
        let err = Bucket::connect(
            &url("gs://lake/p"),
            &env(&[("GOOGLE_SERVICE_ACCOUNT_KEY", "{not json")]),
        )
        .unwrap_err();
        assert!(matches!(err, StorageError::Connect { .. }), "{err}");
        assert_eq!(err.category(), Category::Config);
    }

    #[test]
    fn azure_takes_the_account_from_the_url_or_the_environment() {
        let key = ("AZURE_STORAGE_ACCOUNT_KEY", "c2VjcmV0LWtleQ==");
        Bucket::connect(
            &url("abfss://container@acct.dfs.core.windows.net/p"),
            &env(&[key]),
        )
        .unwrap();
        Bucket::connect(
            &url("az://container/p"),
            &env(&[("AZURE_STORAGE_ACCOUNT_NAME", "acct"), key]),
        )
        .unwrap();
        let err = Bucket::connect(&url("az://container/p"), &env(&[key])).unwrap_err();
        assert!(matches!(err, StorageError::Connect { .. }), "{err}");
        assert_eq!(err.category(), Category::Config);
    }
}
