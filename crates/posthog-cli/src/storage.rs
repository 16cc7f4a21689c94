//! Where a run's output and state live, as the CLI opens them: a local directory and state
//! file, or an object store built from the environment's credentials (the libraries read no
//! environment; they get an explicit store).

use posthog_osiris::{DriverError, ExtractConfig};
use posthog_state::{JsonFileStore, StateStore};
use posthog_storage::{Bucket, Location, ObjectStateStore, ObjectUrl, StorageOptions};
use secrecy::SecretString;

use crate::output::Failure;

/// The prefixes of the environment variables an object store reads: AWS (S3 and compatible
/// stores: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
/// `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, …), Google Cloud Storage (`GOOGLE_*`) and Azure
/// (`AZURE_*`).
const STORAGE_ENV_PREFIXES: [&str; 3] = ["AWS_", "GOOGLE_", "AZURE_"];

/// The store options: the config's `output.storage` over the environment's variables.
pub fn options(config: &ExtractConfig) -> StorageOptions {
    let environment = std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
        .filter(|(name, _)| STORAGE_ENV_PREFIXES.iter().any(|p| name.starts_with(p)))
        .map(|(name, value)| (name, SecretString::from(value)))
        .collect();
    let storage = &config.output.storage;
    StorageOptions {
        endpoint: storage.endpoint.clone(),
        region: storage.region.clone(),
        allow_http: storage.allow_http,
        environment,
        ..StorageOptions::default()
    }
}

/// Opens the state store at `location`: a locked JSON file, or an object read with its
/// version and committed with a conditional put.
pub fn open_state(
    location: &Location,
    options: &StorageOptions,
) -> Result<Box<dyn StateStore>, Failure> {
    match location {
        Location::Local(path) => Ok(Box::new(JsonFileStore::open(path)?)),
        Location::Object(url) if url.prefix.is_empty() => {
            Err(Failure::from(posthog_osiris::ConfigError::new(
                "--state-file",
                format!(
                    "{url} names a bucket, not an object: add the object's key, e.g. {url}/state.json"
                ),
            )))
        }
        Location::Object(url) => {
            // The state object's key is the URL's path within its bucket.
            let bucket_url = ObjectUrl {
                prefix: String::new(),
                ..url.clone()
            };
            let bucket = Bucket::connect(&bucket_url, options).map_err(DriverError::from)?;
            Ok(Box::new(ObjectStateStore::open(bucket, &url.prefix)?))
        }
    }
}
