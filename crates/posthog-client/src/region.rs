//! PostHog regions and the base URLs they imply.
//!
//! The private API (queries, REST) and the public ingestion API (capture, flags) live on
//! different hosts in PostHog Cloud; a self-hosted instance serves both from one URL.

use std::net::IpAddr;

use reqwest::Url;

use crate::error::Error;

/// Where a PostHog project lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Region {
    /// PostHog Cloud US: `https://us.posthog.com`, ingestion on `https://us.i.posthog.com`.
    Us,
    /// PostHog Cloud EU: `https://eu.posthog.com`, ingestion on `https://eu.i.posthog.com`.
    Eu,
    /// A self-hosted instance (or a mock) serving both APIs from one base URL.
    SelfHosted(Url),
}

impl Region {
    /// Parses `us`, `eu` or `self_hosted` (with its base URL) as they appear in a config file.
    ///
    /// ```
    /// use posthog_client::Region;
    /// assert_eq!(Region::parse("eu", None).unwrap(), Region::Eu);
    /// assert!(Region::parse("self_hosted", Some("http://10.0.0.1")).is_err()); // not loopback
    /// assert!(Region::parse("self_hosted", Some("https://ph.example.com")).is_ok());
    /// ```
    pub fn parse(name: &str, custom_base_url: Option<&str>) -> Result<Region, Error> {
        match name {
            "us" => Ok(Region::Us),
            "eu" => Ok(Region::Eu),
            "self_hosted" => {
                let raw = custom_base_url.ok_or_else(|| Error::Config {
                    field: "custom_base_url",
                    message: "region self_hosted needs a custom_base_url".into(),
                })?;
                Region::self_hosted(raw)
            }
            other => Err(Error::Config {
                field: "region",
                message: format!("unknown region {other:?}; expected us, eu or self_hosted"),
            }),
        }
    }

    /// A self-hosted region from its base URL. `https://` is required, except for loopback
    /// hosts (`localhost`, `127.0.0.0/8`, `::1`), which may use plain `http://`.
    pub fn self_hosted(base_url: &str) -> Result<Region, Error> {
        let url = Url::parse(base_url).map_err(|e| Error::Config {
            field: "custom_base_url",
            message: format!("{base_url:?} is not a valid URL: {e}"),
        })?;
        validate_base_url(&url)?;
        Ok(Region::SelfHosted(url))
    }

    /// Base URL of the private API (queries, REST lists, project info).
    pub fn api_base(&self) -> Url {
        match self {
            Region::Us => Url::parse("https://us.posthog.com").expect("constant URL is valid"),
            Region::Eu => Url::parse("https://eu.posthog.com").expect("constant URL is valid"),
            Region::SelfHosted(url) => url.clone(),
        }
    }

    /// Base URL of the public ingestion API (capture, flags).
    pub fn ingest_base(&self) -> Url {
        match self {
            Region::Us => Url::parse("https://us.i.posthog.com").expect("constant URL is valid"),
            Region::Eu => Url::parse("https://eu.i.posthog.com").expect("constant URL is valid"),
            Region::SelfHosted(url) => url.clone(),
        }
    }
}

fn validate_base_url(url: &Url) -> Result<(), Error> {
    let bad = |message: String| Error::Config {
        field: "custom_base_url",
        message,
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("credentials in the URL are not allowed".into()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad(format!("{url} must not have a query or fragment")));
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        "http" => Err(bad(format!(
            "{url} uses plain http; only loopback hosts may, use https"
        ))),
        other => Err(bad(format!("scheme {other:?} is not supported; use https"))),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// Joins a path below a base URL, keeping any path prefix the base has
/// (`https://host/posthog` + `/api/x` → `https://host/posthog/api/x`).
pub(crate) fn join(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let prefix = base.path().trim_end_matches('/');
    url.set_path(&format!("{prefix}{path}"));
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_regions_use_the_documented_hosts() {
        assert_eq!(Region::Us.api_base().as_str(), "https://us.posthog.com/");
        assert_eq!(
            Region::Us.ingest_base().as_str(),
            "https://us.i.posthog.com/"
        );
        assert_eq!(Region::Eu.api_base().as_str(), "https://eu.posthog.com/");
        assert_eq!(
            Region::Eu.ingest_base().as_str(),
            "https://eu.i.posthog.com/"
        );
    }

    #[test]
    fn plain_http_only_for_loopback() {
        for ok in [
            "http://127.0.0.1:8000",
            "http://localhost",
            "http://[::1]:1",
            "https://x.io",
        ] {
            assert!(Region::self_hosted(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.1.2.3",
            "http://posthog.internal",
            "ftp://localhost",
            "https://u:p@x.io",
            "https://x.io/?a=1",
            "not a url",
        ] {
            let err = Region::self_hosted(bad).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("invalid client configuration: custom_base_url"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn unknown_region_is_named() {
        let err = Region::parse("mars", None).unwrap_err();
        assert!(err.to_string().contains("\"mars\""), "{err}");
        assert!(Region::parse("self_hosted", None).is_err());
    }

    #[test]
    fn join_keeps_a_base_path_prefix() {
        let base = Url::parse("https://h.io/posthog/").unwrap();
        assert_eq!(
            join(&base, "/api/users/@me/").as_str(),
            "https://h.io/posthog/api/users/@me/"
        );
        let bare = Url::parse("https://h.io").unwrap();
        assert_eq!(join(&bare, "/flags").as_str(), "https://h.io/flags");
    }
}
