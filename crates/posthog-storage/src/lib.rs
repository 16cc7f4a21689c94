//! Object storage for the PostHog toolkit: extractions land on S3, Google Cloud Storage or
//! Azure Blob Storage (PRODUCT.md §8) through the `object_store` crate, with the same
//! exactly-once contract as a local directory.
//!
//! - [`Location`]: where output goes, a local path or an object-store URL ([`ObjectUrl`]:
//!   `s3://bucket/prefix`, `gs://…`, `az://…`,
//!   `abfss://container@account.dfs.core.windows.net/…`).
//! - [`Bucket`]: one object-store location, ready to use: [`Bucket::connect`] builds the store
//!   from [`StorageOptions`] (which carry the environment the CLI read: this crate reads none).
//!   Its methods are synchronous and may be called from any thread; the I/O runs on a small
//!   runtime of the bucket's own.
//! - [`ObjectParts`]: a table's directory of part files as a [`posthog_core::PartStore`]: a part
//!   is a multipart upload completed on commit and aborted when dropped.
//! - [`ObjectStateStore`]: the state document as one object, each commit a conditional put
//!   against the version read, merged with other tables' commits that landed meanwhile.
//! - [`Lease`]: one run per table: an object created only if absent, renewed while the run lives,
//!   expiring by itself after a crash.
//!
//! Every failure is a [`StorageError`] whose [`category`](StorageError::category) says what the
//! user must do; messages name the object's URL, never a credential, and object_store's own
//! error is kept as the source ([`ObjectStoreError`]).
//!
//! Besides `posthog-client` this is the only crate that does network I/O. It reads no
//! environment variable, prints nothing and touches no local file: credentials and endpoints
//! arrive in [`StorageOptions`]. (The cloud SDK underneath may still look for what only it
//! knows how to find: instance or workload identity, Google's application-default credentials
//! file under `$HOME`.)

#![warn(missing_docs)]

mod bucket;
mod connect;
mod error;
mod lease;
mod location;
mod options;
mod parts;
mod state;
#[cfg(test)]
mod watched;

pub use bucket::{Bucket, PutCondition, Version};
pub use error::{ObjectStoreError, StorageError};
pub use lease::{LEASE_DEFAULT_TTL, Lease, LeaseHolder};
pub use location::{Location, ObjectUrl, Scheme};
pub use options::StorageOptions;
pub use parts::{ObjectParts, PART_CHUNK};
pub use state::ObjectStateStore;

/// The README's example, compiled as a doctest so it cannot drift from the API.
#[cfg(doctest)]
mod readme_example {
    #[doc = include_str!("../README.md")]
    struct StorageReadme;
}
