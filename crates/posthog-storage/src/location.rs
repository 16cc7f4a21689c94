//! Where output goes: a local path or an object-store URL, parsed once and checked, so that
//! every key built under it is one the stores accept.

use std::fmt;
use std::path::PathBuf;

use crate::StorageError;

/// A place to write to: a local directory, or a prefix in a bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A path on the local file system (written by `posthog_core::LocalDir`).
    Local(PathBuf),
    /// A prefix in an object store.
    Object(ObjectUrl),
}

impl Location {
    /// Reads a location as a user writes it:
    ///
    /// | text | location |
    /// |---|---|
    /// | `s3://bucket/a/b` | S3 bucket `bucket`, prefix `a/b` |
    /// | `gs://bucket/p` | Google Cloud Storage |
    /// | `az://container/p` | Azure Blob Storage (the account from the environment) |
    /// | `abfss://container@account.dfs.core.windows.net/p` | Azure, with the account |
    /// | `file:///abs/path` | the local path `/abs/path` |
    /// | anything without `://` | a local path, as written |
    ///
    /// A trailing `/` is dropped. An unknown scheme, an empty or malformed bucket, a query or
    /// fragment, or a prefix with an empty, `.` or `..` segment is refused with
    /// [`StorageError::Location`] naming the text and what is wrong.
    ///
    /// ```
    /// use posthog_storage::{Location, Scheme};
    ///
    /// let Location::Object(url) = Location::parse("s3://lake/posthog/")? else { panic!() };
    /// assert_eq!(url.scheme, Scheme::S3);
    /// assert_eq!((url.bucket.as_str(), url.prefix.as_str()), ("lake", "posthog"));
    /// assert_eq!(url.to_string(), "s3://lake/posthog");
    /// assert!(Location::parse("s3://lake/a/../b").is_err());
    /// # Ok::<(), posthog_storage::StorageError>(())
    /// ```
    pub fn parse(text: &str) -> Result<Location, StorageError> {
        let refuse = |reason: &str| StorageError::Location {
            text: text.to_owned(),
            reason: reason.to_owned(),
        };
        if text.is_empty() {
            return Err(refuse("it is empty"));
        }
        let Some((scheme, rest)) = text.split_once("://") else {
            return Ok(Location::Local(PathBuf::from(text)));
        };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "file" => return parse_file_url(text).map(Location::Local),
            "s3" => Scheme::S3,
            "gs" => Scheme::Gcs,
            "az" | "abfs" | "abfss" => Scheme::Azure,
            _ => {
                return Err(refuse(&format!(
                    "unknown scheme {scheme:?}: use s3://, gs://, az://, abfss:// or file:// \
                     (or a plain path)"
                )));
            }
        };
        if rest.contains(['?', '#']) {
            return Err(refuse("a storage URL takes no query (?) or fragment (#)"));
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (bucket, account) = split_authority(scheme, authority).map_err(|r| refuse(&r))?;
        let prefix = check_prefix(path).map_err(|r| refuse(&r))?;
        Ok(Location::Object(ObjectUrl {
            scheme,
            bucket,
            prefix,
            account,
        }))
    }

    /// The location `child` below this one; `child` may hold several segments (`a/b`).
    pub fn join(&self, child: &str) -> Location {
        match self {
            Location::Local(path) => Location::Local(path.join(child)),
            Location::Object(url) => Location::Object(url.join(child)),
        }
    }
}

impl fmt::Display for Location {
    /// A path as it is; an object URL normalised (`s3://bucket/prefix`, no trailing `/`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(path) => write!(f, "{}", path.display()),
            Location::Object(url) => url.fmt(f),
        }
    }
}

/// The kind of object store a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Amazon S3 and S3-compatible stores (MinIO, R2, Ceph): `s3://`.
    S3,
    /// Google Cloud Storage: `gs://`.
    Gcs,
    /// Azure Blob Storage / Data Lake Storage Gen2: `az://`, `abfs://`, `abfss://`.
    Azure,
}

/// A prefix in a bucket (an Azure container), checked: every key built under it is valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectUrl {
    /// The store.
    pub scheme: Scheme,
    /// The bucket (S3, GCS) or container (Azure).
    pub bucket: String,
    /// The key prefix: `""` or segments joined by `/`, without a leading or trailing `/`.
    pub prefix: String,
    /// The Azure storage account, when the URL names it (`abfss://container@account.…`);
    /// otherwise it comes from the environment (`AZURE_STORAGE_ACCOUNT_NAME`).
    pub account: Option<String>,
}

impl ObjectUrl {
    /// The URL of `child` below this prefix; `child` may hold several segments (`a/b`).
    pub fn join(&self, child: &str) -> ObjectUrl {
        ObjectUrl {
            prefix: self.key(child),
            ..self.clone()
        }
    }

    /// The key of `child` in the bucket: `prefix/child` (or `child` when the prefix is empty).
    /// Slashes at either end of `child` are dropped.
    pub fn key(&self, child: &str) -> String {
        let child = child.trim_matches('/');
        match (self.prefix.is_empty(), child.is_empty()) {
            (_, true) => self.prefix.clone(),
            (true, false) => child.to_owned(),
            (false, false) => format!("{}/{child}", self.prefix),
        }
    }

    /// The bucket itself, as a URL without the prefix (`s3://bucket`), for messages.
    pub(crate) fn bucket_url(&self) -> String {
        ObjectUrl {
            prefix: String::new(),
            ..self.clone()
        }
        .to_string()
    }
}

impl fmt::Display for ObjectUrl {
    /// `s3://bucket/prefix`, `gs://…`, `az://container/prefix`, or
    /// `abfss://container@account.dfs.core.windows.net/prefix` when the account is known; no
    /// trailing `/`. [`Location::parse`] reads it back to an equal value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.scheme, &self.account) {
            (Scheme::S3, _) => write!(f, "s3://{}", self.bucket)?,
            (Scheme::Gcs, _) => write!(f, "gs://{}", self.bucket)?,
            (Scheme::Azure, None) => write!(f, "az://{}", self.bucket)?,
            (Scheme::Azure, Some(account)) => {
                write!(f, "abfss://{}@{account}.dfs.core.windows.net", self.bucket)?
            }
        }
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

/// `file:///abs/path` as a path; percent-escapes are decoded.
fn parse_file_url(text: &str) -> Result<PathBuf, StorageError> {
    let refuse = |reason: &str| StorageError::Location {
        text: text.to_owned(),
        reason: reason.to_owned(),
    };
    let url = url::Url::parse(text).map_err(|e| refuse(&format!("not a valid file URL ({e})")))?;
    url.to_file_path().map_err(|()| {
        refuse("a file URL names an absolute local path: file:///path (or write the plain path)")
    })
}

/// The bucket (container) and, for Azure's `container@account.dfs.core.windows.net`, the
/// account.
fn split_authority(scheme: Scheme, authority: &str) -> Result<(String, Option<String>), String> {
    let (bucket, account) = match (scheme, authority.split_once('@')) {
        (Scheme::Azure, Some((container, host))) => (container, Some(azure_account(host)?)),
        (_, Some(_)) => {
            return Err(
                "credentials do not belong in the URL: pass them in the environment".into(),
            );
        }
        (_, None) => (authority, None),
    };
    if bucket.is_empty() {
        return Err("the bucket name is empty".into());
    }
    if let Some(bad) = bucket
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        return Err(format!(
            "the bucket name {bucket:?} holds {bad:?}: bucket names are letters, digits, '-', \
             '.' and '_'"
        ));
    }
    Ok((bucket.to_owned(), account))
}

/// The account of an Azure host `account.dfs.core.windows.net` (or `.blob.core.windows.net`).
fn azure_account(host: &str) -> Result<String, String> {
    let account = [".dfs.core.windows.net", ".blob.core.windows.net"]
        .iter()
        .find_map(|suffix| host.strip_suffix(suffix));
    match account {
        Some(account)
            if !account.is_empty() && account.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            Ok(account.to_owned())
        }
        _ => Err(format!(
            "the Azure host {host:?} is not <account>.dfs.core.windows.net or \
             <account>.blob.core.windows.net"
        )),
    }
}

/// The prefix without its trailing `/`, each segment checked as the stores' keys are.
fn check_prefix(path: &str) -> Result<String, String> {
    let prefix = path.strip_suffix('/').unwrap_or(path);
    if prefix.is_empty() {
        return Ok(String::new());
    }
    for segment in prefix.split('/') {
        match segment {
            "" => return Err(format!("the prefix {prefix:?} has an empty segment (//)")),
            "." | ".." => {
                return Err(format!(
                    "the prefix {prefix:?} has a {segment:?} segment: object keys are not paths \
                     to resolve; write the prefix itself"
                ));
            }
            _ if segment.chars().any(|c| c.is_ascii_control()) => {
                return Err(format!("the prefix {prefix:?} holds a control character"));
            }
            _ => {}
        }
    }
    Ok(prefix.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(scheme: Scheme, bucket: &str, prefix: &str, account: Option<&str>) -> Location {
        Location::Object(ObjectUrl {
            scheme,
            bucket: bucket.into(),
            prefix: prefix.into(),
            account: account.map(Into::into),
        })
    }

    #[test]
    fn every_scheme_and_path_form_parses() {
        use Scheme::*;
        let cases = [
            ("s3://bucket/a/b", object(S3, "bucket", "a/b", None)),
            ("s3://bucket/a/b/", object(S3, "bucket", "a/b", None)),
            ("s3://bucket", object(S3, "bucket", "", None)),
            ("s3://bucket/", object(S3, "bucket", "", None)),
            ("S3://my.bucket-1/x", object(S3, "my.bucket-1", "x", None)),
            ("gs://bucket/p", object(Gcs, "bucket", "p", None)),
            ("gs://my_bucket", object(Gcs, "my_bucket", "", None)),
            (
                "az://container/p/q",
                object(Azure, "container", "p/q", None),
            ),
            (
                "abfss://container@acct.dfs.core.windows.net/p",
                object(Azure, "container", "p", Some("acct")),
            ),
            (
                "abfs://container@acct.blob.core.windows.net",
                object(Azure, "container", "", Some("acct")),
            ),
            ("abfss://container/p", object(Azure, "container", "p", None)),
            ("file:///abs/path", Location::Local("/abs/path".into())),
            (
                "file:///with%20space",
                Location::Local("/with space".into()),
            ),
            ("out", Location::Local("out".into())),
            ("./out/dir", Location::Local("./out/dir".into())),
            ("/abs/out", Location::Local("/abs/out".into())),
            ("C:\\out", Location::Local("C:\\out".into())),
        ];
        for (text, expected) in cases {
            assert_eq!(Location::parse(text).unwrap(), expected, "{text}");
        }
    }

    #[test]
    fn malformed_locations_are_refused_naming_the_text_and_the_problem() {
        let cases = [
            ("", "empty"),
            ("ftp://host/p", "unknown scheme \"ftp\""),
            ("s3:///prefix", "bucket name is empty"),
            ("s3://", "bucket name is empty"),
            ("s3://bucket/a//b", "empty segment"),
            ("s3://bucket//a", "empty segment"),
            ("s3://bucket/a/../b", "\"..\" segment"),
            ("gs://bucket/./b", "\".\" segment"),
            ("s3://bucket/a?versionId=1", "no query"),
            ("s3://bucket/a#frag", "no query"),
            ("s3://key:secret@bucket/a", "credentials do not belong"),
            ("s3://bu cket/a", "holds ' '"),
            ("s3://bucket:9000/a", "holds ':'"),
            ("abfss://c@acct.example.com/p", "Azure host"),
            ("abfss://c@.dfs.core.windows.net/p", "Azure host"),
            ("file://relative/path", "absolute local path"),
            ("s3://bucket/a\u{1}b", "control character"),
        ];
        for (text, reason) in cases {
            let err = Location::parse(text).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("{text:?}")) && msg.contains(reason),
                "{text}: {msg}"
            );
            assert_eq!(
                posthog_error::Categorized::category(&err),
                posthog_error::Category::Config
            );
        }
    }

    #[test]
    fn display_normalises_and_reads_back_equal() {
        for (text, shown) in [
            ("s3://bucket/a/b/", "s3://bucket/a/b"),
            ("S3://bucket", "s3://bucket"),
            ("gs://bucket/p", "gs://bucket/p"),
            ("az://container/p", "az://container/p"),
            (
                "abfs://c@acct.blob.core.windows.net/p",
                "abfss://c@acct.dfs.core.windows.net/p",
            ),
            ("out/dir", "out/dir"),
            ("file:///abs/x", "/abs/x"),
        ] {
            let location = Location::parse(text).unwrap();
            assert_eq!(location.to_string(), shown, "{text}");
            assert_eq!(Location::parse(shown).unwrap(), location, "{text}");
        }
    }

    #[test]
    fn join_and_key_build_keys_under_the_prefix() {
        let Location::Object(url) = Location::parse("s3://b/p").unwrap() else {
            panic!("an object URL")
        };
        assert_eq!(url.key("events/part-1.parquet"), "p/events/part-1.parquet");
        assert_eq!(url.key("/events/"), "p/events");
        assert_eq!(url.key(""), "p");
        assert_eq!(
            url.join("events").join("date=2026-01-01").prefix,
            "p/events/date=2026-01-01"
        );
        assert_eq!(url.join("events").to_string(), "s3://b/p/events");
        let Location::Object(root) = Location::parse("gs://b").unwrap() else {
            panic!("an object URL")
        };
        assert_eq!(root.key("state.json"), "state.json");
        assert_eq!(root.bucket_url(), "gs://b");
        assert_eq!(url.join("x").bucket_url(), "s3://b");
        assert_eq!(
            Location::parse("out").unwrap().join("events/a"),
            Location::Local(PathBuf::from("out/events/a"))
        );
        assert_eq!(
            Location::parse("s3://b/p")
                .unwrap()
                .join("t/_lease")
                .to_string(),
            "s3://b/p/t/_lease"
        );
    }
}
