//! The crate's error type, its [`Category`], and how an object_store failure is read: which
//! of them the user must fix (a missing bucket, denied access) and which are the store's.

use std::io;

use posthog_error::{Categorized, Category};

/// What can go wrong with object storage. Messages name the object's URL, never a credential;
/// object_store's own error is the [`source()`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The text is not a location this crate reads (see [`Location::parse`](crate::Location)).
    #[error("{text:?} is not a storage location: {reason}")]
    Location {
        /// The text as given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A name used under a location is not a valid object key (an empty, `.` or `..` segment,
    /// a control character).
    #[error("{object} is not a valid object name: {reason}")]
    Key {
        /// The object's URL.
        object: String,
        /// What is wrong with the name.
        reason: String,
    },

    /// The store cannot be set up from the options and environment given (a malformed
    /// credential, a missing Azure account, an option the store does not take). No request was
    /// sent.
    #[error("cannot set up the object store for {url}; check the storage settings and credentials")]
    Connect {
        /// The location's URL.
        url: String,
        /// object_store's error.
        #[source]
        source: ObjectStoreError,
    },

    /// The bucket (container) does not exist, or these credentials cannot see it.
    #[error(
        "cannot {op} {object}: the bucket {bucket} does not exist; create it or fix the output \
         location"
    )]
    NoSuchBucket {
        /// What was being done, e.g. `read`.
        op: &'static str,
        /// The object's URL.
        object: String,
        /// The bucket's URL.
        bucket: String,
        /// object_store's error.
        #[source]
        source: ObjectStoreError,
    },

    /// The store refused the credentials, or they may not do this.
    #[error(
        "cannot {op} {object}: access denied; check the credentials the run was given \
         (AWS_*, GOOGLE_*, AZURE_* or the instance identity) and their permissions on the bucket"
    )]
    Denied {
        /// What was being done.
        op: &'static str,
        /// The object's URL.
        object: String,
        /// object_store's error.
        #[source]
        source: ObjectStoreError,
    },

    /// A conditional write failed: the object exists although it was to be created, or it
    /// changed since the version the write was conditional on. Nothing was written.
    #[error(
        "the conditional write of {key} failed: another writer created or changed it since it \
         was read; nothing was written"
    )]
    Precondition {
        /// The object's URL.
        key: String,
    },

    /// The store wrote over an object that a put-if-absent should have left alone: it ignores
    /// conditional writes (`If-None-Match` / `If-Match`), so neither the lease nor the state's
    /// commit could keep two runs apart.
    #[error(
        "the store at {bucket} does not honour conditional writes: a put-if-absent of {object} \
         replaced the object that was there; one run per table and the state's commits rely on \
         them, so nothing is written there: use a store that supports them (AWS S3, Google Cloud \
         Storage, Azure, MinIO, Cloudflare R2) or a local directory"
    )]
    Unconditional {
        /// The bucket's URL.
        bucket: String,
        /// The object written twice.
        object: String,
    },

    /// Another run holds the lease: it is writing the same place now.
    #[error(
        "{lease} is held by run {run_id} on host {host} (pid {pid}) until {expires_at} \
         ({expires_in_secs} s from now); another run is writing here: wait for it to finish, \
         or, if that run is gone, its lease expires by itself"
    )]
    LeaseHeld {
        /// The lease object's URL.
        lease: String,
        /// The holder's run id.
        run_id: String,
        /// The holder's host name.
        host: String,
        /// The holder's process id.
        pid: u32,
        /// When the lease expires unless renewed, RFC 3339.
        expires_at: String,
        /// Seconds from now until then, rounded up.
        expires_in_secs: u64,
    },

    /// A request failed after object_store's own retries: the store could not be reached,
    /// throttled us, failed, or answered something unusable. The category says which.
    #[error("cannot {op} {object}")]
    Request {
        /// What was being done.
        op: &'static str,
        /// The object's URL.
        object: String,
        /// [`Network`](Category::Network), [`Timeout`](Category::Timeout),
        /// [`RateLimited`](Category::RateLimited), [`Server`](Category::Server) or
        /// [`Data`](Category::Data).
        category: Category,
        /// object_store's error.
        #[source]
        source: ObjectStoreError,
    },

    /// The bucket's I/O runtime could not start, or stopped under a request (its task
    /// panicked, or the call was made from the runtime's own thread).
    #[error("the storage I/O runtime failed: {reason}")]
    Runtime {
        /// What happened.
        reason: String,
    },
}

impl StorageError {
    /// The failure's category:
    ///
    /// - [`Config`](Category::Config): a malformed location or name, a store that cannot be set
    ///   up, a bucket that does not exist (the user fixes the config or creates the bucket), a
    ///   lease another run holds and a failed conditional write (another run writes the same
    ///   place: as with the local table lock, the user must stop one of them; retrying cannot
    ///   help while both run).
    /// - [`Permission`](Category::Permission): access denied or unauthenticated.
    /// - The request's own category (network, timeout, rate_limited, server, data) for a
    ///   request that failed after object_store's retries; [`Unknown`](Category::Unknown) for a
    ///   runtime that failed.
    pub fn category(&self) -> Category {
        match self {
            StorageError::Location { .. }
            | StorageError::Key { .. }
            | StorageError::Connect { .. }
            | StorageError::NoSuchBucket { .. }
            | StorageError::Precondition { .. }
            | StorageError::Unconditional { .. }
            | StorageError::LeaseHeld { .. } => Category::Config,
            StorageError::Denied { .. } => Category::Permission,
            StorageError::Request { category, .. } => *category,
            StorageError::Runtime { .. } => Category::Unknown,
        }
    }

    /// This error as an `io::Error`, for the traits whose errors carry one
    /// (`posthog_core::CoreError::Io`, `posthog_state::StateError::Io`). Its category travels
    /// with it (`posthog_error::CategorizedError`, which `Category::of_io_error` reads); the
    /// kind is what an `io::Error` reader expects besides: `PermissionDenied` for denied access,
    /// `NotFound` for a missing bucket, `TimedOut` and `NotConnected` for the network, `Other`
    /// for the rest.
    pub fn into_io(self) -> io::Error {
        let kind = match &self {
            StorageError::Denied { .. } => io::ErrorKind::PermissionDenied,
            StorageError::NoSuchBucket { .. } => io::ErrorKind::NotFound,
            StorageError::Request {
                category: Category::Timeout,
                ..
            } => io::ErrorKind::TimedOut,
            StorageError::Request {
                category: Category::Network,
                ..
            } => io::ErrorKind::NotConnected,
            _ => io::ErrorKind::Other,
        };
        let category = self.category();
        io::Error::new(kind, posthog_error::CategorizedError::new(category, self))
    }

    /// Reads a failed object_store call on `object` (a URL) in `bucket` (the bucket's URL).
    pub(crate) fn from_store(
        op: &'static str,
        object: String,
        bucket: String,
        source: object_store::Error,
    ) -> StorageError {
        let failure = Failure::of(&source);
        let source = ObjectStoreError::from(source);
        match failure {
            Failure::Precondition => StorageError::Precondition { key: object },
            Failure::NoSuchBucket => StorageError::NoSuchBucket {
                op,
                object,
                bucket,
                source,
            },
            Failure::Denied => StorageError::Denied { op, object, source },
            Failure::Other(category) => StorageError::Request {
                op,
                object,
                category,
                source,
            },
            Failure::NotFound => StorageError::Request {
                op,
                object,
                category: Category::Data,
                source,
            },
        }
    }
}

/// object_store's error, as the source of a [`StorageError`]. Its message already holds its
/// causes (object_store writes `…: {source}` into each of its messages), so it ends the chain
/// (`source()` is `None`) and an error-chain printer shows each cause once.
pub struct ObjectStoreError(Box<object_store::Error>);

impl ObjectStoreError {
    /// The error as object_store returned it.
    pub fn inner(&self) -> &object_store::Error {
        &self.0
    }
}

impl From<object_store::Error> for ObjectStoreError {
    fn from(error: object_store::Error) -> Self {
        ObjectStoreError(Box::new(error))
    }
}

impl std::fmt::Display for ObjectStoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Debug for ObjectStoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ObjectStoreError {}

impl Categorized for StorageError {
    fn category(&self) -> Category {
        StorageError::category(self)
    }
}

/// What an object_store error means for us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The object is not there (the bucket is).
    NotFound,
    /// The bucket or container is not there.
    NoSuchBucket,
    /// Access denied or unauthenticated.
    Denied,
    /// A conditional request's condition failed.
    Precondition,
    /// Anything else, with its category.
    Other(Category),
}

/// What S3, GCS and Azure say in the body of a "no such bucket" answer.
const NO_BUCKET_MARKERS: &[&str] = &[
    "NoSuchBucket",
    "ContainerNotFound",
    "The specified bucket does not exist",
];

/// What S3 and Azure say in the body of a refusal that object_store did not map to
/// `PermissionDenied` (a listing's 403 arrives as a generic error).
const DENIED_MARKERS: &[&str] = &[
    "status code: 401",
    "status code: 403",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AuthenticationFailed",
    "AuthorizationFailure",
];

impl Failure {
    /// Classifies `error`. object_store maps the status of most failed requests to a variant
    /// (404 `NotFound`, 412 `Precondition`, 403 `PermissionDenied`, …), but a listing or a
    /// credential request fails as `Generic` with the HTTP error or the status and the
    /// server's body in its source chain (object_store 0.14's `RetryError`, which is private):
    /// those are read from the chain's text. The moto test checks the markers against a real
    /// S3 implementation.
    pub(crate) fn of(error: &object_store::Error) -> Failure {
        use object_store::Error as E;
        let text = chain_text(error);
        let no_bucket = NO_BUCKET_MARKERS.iter().any(|m| text.contains(m));
        match error {
            E::Precondition { .. } | E::AlreadyExists { .. } | E::NotModified { .. } => {
                Failure::Precondition
            }
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => Failure::Denied,
            E::NotFound { .. } if no_bucket => Failure::NoSuchBucket,
            E::NotFound { .. } => Failure::NotFound,
            E::NotSupported { .. }
            | E::NotImplemented { .. }
            | E::UnknownConfigurationKey { .. }
            | E::InvalidPath { .. } => Failure::Other(Category::Config),
            _ => Failure::of_generic(error, &text, no_bucket),
        }
    }

    fn of_generic(error: &object_store::Error, text: &str, no_bucket: bool) -> Failure {
        if let Some(kind) = http_error_kind(error) {
            use object_store::client::HttpErrorKind as K;
            return Failure::Other(match kind {
                K::Timeout => Category::Timeout,
                _ => Category::Network,
            });
        }
        if no_bucket {
            Failure::NoSuchBucket
        } else if DENIED_MARKERS.iter().any(|m| text.contains(m)) {
            Failure::Denied
        } else if text.contains("status code: 404") {
            Failure::NotFound
        } else if text.contains("status code: 412") {
            Failure::Precondition
        } else if text.contains("status code: 429") || text.contains("SlowDown") {
            Failure::Other(Category::RateLimited)
        } else {
            Failure::Other(Category::Server)
        }
    }
}

/// The kind of the transport error in `error`'s source chain, if the request never got an
/// answer.
fn http_error_kind(error: &object_store::Error) -> Option<object_store::client::HttpErrorKind> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if let Some(http) = e.downcast_ref::<object_store::client::HttpError>() {
            return Some(http.kind());
        }
        next = e.source();
    }
    None
}

/// Every message of `error`'s chain, joined.
fn chain_text(error: &object_store::Error) -> String {
    posthog_error::ErrorChain::new(error).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(text: &str) -> Box<dyn std::error::Error + Send + Sync> {
        text.to_owned().into()
    }

    fn generic(text: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: boxed(text),
        }
    }

    #[test]
    fn failures_are_classified_by_variant_then_by_what_the_server_said() {
        use object_store::Error as E;
        let cases = [
            (
                E::NotFound {
                    path: "k".into(),
                    source: boxed("<Code>NoSuchKey</Code>"),
                },
                Failure::NotFound,
            ),
            (
                E::NotFound {
                    path: "k".into(),
                    source: boxed("<Code>NoSuchBucket</Code>"),
                },
                Failure::NoSuchBucket,
            ),
            (
                E::AlreadyExists {
                    path: "k".into(),
                    source: boxed("x"),
                },
                Failure::Precondition,
            ),
            (
                E::Unauthenticated {
                    path: "k".into(),
                    source: boxed("x"),
                },
                Failure::Denied,
            ),
            (
                generic("Server returned non-2xx status code: 403 Forbidden: <Code>AccessDenied"),
                Failure::Denied,
            ),
            (
                generic("status code: 404 Not Found: <Code>NoSuchBucket</Code>"),
                Failure::NoSuchBucket,
            ),
            (
                generic("Server returned non-2xx status code: 503 Service Unavailable: "),
                Failure::Other(Category::Server),
            ),
            (
                generic("Server returned non-2xx status code: 429 Too Many Requests: "),
                Failure::Other(Category::RateLimited),
            ),
            (
                E::NotImplemented {
                    operation: "x".into(),
                    implementer: "y".into(),
                },
                Failure::Other(Category::Config),
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(Failure::of(&error), expected, "{error}");
        }
    }

    #[test]
    fn a_transport_error_in_the_chain_is_the_network() {
        use object_store::client::{HttpError, HttpErrorKind};
        let connect = object_store::Error::Generic {
            store: "S3",
            source: Box::new(HttpError::new(
                HttpErrorKind::Connect,
                io::Error::other("refused"),
            )),
        };
        assert_eq!(Failure::of(&connect), Failure::Other(Category::Network));
        let timeout = object_store::Error::Generic {
            store: "S3",
            source: Box::new(HttpError::new(
                HttpErrorKind::Timeout,
                io::Error::other("slow"),
            )),
        };
        assert_eq!(Failure::of(&timeout), Failure::Other(Category::Timeout));
    }

    #[test]
    fn categories_and_io_kinds_carry_what_the_cli_needs() {
        let object = || "s3://b/p/k".to_owned();
        let bucket = || "s3://b".to_owned();
        let denied = StorageError::from_store(
            "read",
            object(),
            bucket(),
            object_store::Error::PermissionDenied {
                path: "p/k".into(),
                source: boxed("AccessDenied"),
            },
        );
        assert_eq!(denied.category(), Category::Permission);
        assert!(
            denied
                .to_string()
                .starts_with("cannot read s3://b/p/k: access denied")
        );
        let io = denied.into_io();
        assert_eq!(Category::of_io_error(&io), Category::Permission);
        assert!(
            io.to_string()
                .starts_with("cannot read s3://b/p/k: access denied")
        );

        let missing = StorageError::from_store(
            "write",
            object(),
            bucket(),
            generic("<Code>NoSuchBucket</Code>"),
        );
        assert_eq!(missing.category(), Category::Config);
        assert!(
            missing
                .to_string()
                .contains("the bucket s3://b does not exist"),
            "{missing}"
        );
        let text = missing.to_string();
        let io = missing.into_io();
        assert_eq!(
            Category::of_io_error(&io),
            Category::Config,
            "a missing bucket behind a file-like seam is still a config error"
        );
        assert_eq!(io.to_string(), text);

        let server = StorageError::from_store("list", object(), bucket(), generic("500"));
        assert_eq!(server.category(), Category::Server);
        assert_eq!(server.category().exit_code(), 1);
        let precondition =
            StorageError::from_store("write", object(), bucket(), generic("status code: 412"));
        assert!(
            matches!(precondition, StorageError::Precondition { ref key } if key == "s3://b/p/k")
        );
    }
}
