//! How the agent commands find PostHog when no config file is given: `--host` / `--project-id`,
//! else `POSTHOG_HOST` / `POSTHOG_PROJECT_ID`, and the personal API key from `--api-key-file` or
//! `POSTHOG_PERSONAL_API_KEY`. Every setting that is missing is reported in one error, each
//! with the flag and variable that provide it; nothing is defaulted (the host included: a
//! command never talks to a PostHog the user did not name). The result is an ordinary validated
//! [`ExtractConfig`], so the same rules apply as for a config file (numeric project id,
//! `https://` except on loopback, …).

use std::ffi::OsString;
use std::path::Path;

use posthog_osiris::{ConfigError, ExtractConfig};
use secrecy::SecretString;
use serde_json::json;

use crate::key::KEY_ENV;

/// Environment variable holding the project id.
pub const PROJECT_ENV: &str = "POSTHOG_PROJECT_ID";
/// Environment variable holding the host.
pub const HOST_ENV: &str = "POSTHOG_HOST";
/// Environment variable holding the project API key (capture, flags).
pub const PROJECT_KEY_ENV: &str = "POSTHOG_PROJECT_API_KEY";

/// Where an agent command was told to find PostHog, as typed on the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectionFlags<'a> {
    /// `--config FILE`.
    pub config: Option<&'a Path>,
    /// `--host HOST`.
    pub host: Option<&'a str>,
    /// `--project-id ID`.
    pub project_id: Option<&'a str>,
    /// `--api-key-file PATH` (read later, by [`crate::key::resolve`]; here it only counts as
    /// a source of the key).
    pub api_key_file: Option<&'a Path>,
}

/// The config an agent command runs with. `env` reads one environment variable (the caller
/// owns the environment; tests pass a map). With `--config`, the file is the connection (its
/// key, if it has none, is resolved later like `run`'s); without, every setting the flags and
/// the environment leave out is named in one error.
pub fn agent_config(
    flags: ConnectionFlags<'_>,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<ExtractConfig, ConfigError> {
    if let Some(path) = flags.config {
        return ExtractConfig::from_path(path);
    }
    let text = |name: &str| -> Result<Option<String>, ConfigError> {
        match env(name) {
            None => Ok(None),
            Some(v) if v.is_empty() => Ok(None),
            Some(v) => v
                .into_string()
                .map(Some)
                .map_err(|_| ConfigError::new(name, "is not valid UTF-8")),
        }
    };
    let project = match flags.project_id {
        Some(id) => Some(("--project-id", id.to_owned())),
        None => text(PROJECT_ENV)?.map(|id| (PROJECT_ENV, id)),
    };
    let host = match flags.host {
        Some(h) => Some(("--host", h.to_owned())),
        None => text(HOST_ENV)?.map(|h| (HOST_ENV, h)),
    };
    let has_key = flags.api_key_file.is_some() || env(KEY_ENV).is_some_and(|v| !v.is_empty());
    let (Some((host_field, host)), Some((project_field, project_id)), true) =
        (&host, &project, has_key)
    else {
        return Err(missing(host.is_none(), project.is_none(), !has_key));
    };
    let connection = match region_of(host) {
        Some(region) => json!({"project_id": project_id, "region": region}),
        None => json!({
            "project_id": project_id,
            "region": "self_hosted",
            "custom_base_url": host,
        }),
    };
    ExtractConfig::from_value(json!({ "resolved_connection": connection })).map_err(|e| {
        // Name the flag or variable the user set rather than the config field it became.
        let field = match e.field.as_str() {
            "resolved_connection.project_id" => *project_field,
            f if f.starts_with("resolved_connection") => *host_field,
            _ => return e,
        };
        ConfigError::new(field, e.message)
    })
}

/// One error naming every missing setting and where each can come from, e.g.
/// `connection: missing the host (--host HOST or POSTHOG_HOST) and the project id
/// (--project-id ID or POSTHOG_PROJECT_ID); or pass --config FILE`.
fn missing(host: bool, project_id: bool, api_key: bool) -> ConfigError {
    let wanted = [
        (
            host,
            format!("the host (--host HOST or {HOST_ENV}: us, eu or a base URL)"),
        ),
        (
            project_id,
            format!("the project id (--project-id ID or {PROJECT_ENV})"),
        ),
        (
            api_key,
            format!("the personal API key (--api-key-file PATH or {KEY_ENV})"),
        ),
    ];
    let names: Vec<String> = wanted
        .into_iter()
        .filter_map(|(is_missing, name)| is_missing.then_some(name))
        .collect();
    let list = match names.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    };
    ConfigError::new(
        "connection",
        format!("missing {list}; or pass --config FILE"),
    )
}

/// `us` / `eu` for their names and PostHog Cloud's hosts (private, ingestion and the legacy
/// `app.posthog.com`); `None` for anything else, which is a self-hosted base URL.
fn region_of(host: &str) -> Option<&'static str> {
    let bare = host
        .trim()
        .trim_end_matches('/')
        .trim_start_matches("https://")
        .to_ascii_lowercase();
    match bare.as_str() {
        "us" | "us.posthog.com" | "us.i.posthog.com" | "app.posthog.com" => Some("us"),
        "eu" | "eu.posthog.com" | "eu.i.posthog.com" => Some("eu"),
        _ => None,
    }
}

/// The project API key from `--project-api-key-file`, else `POSTHOG_PROJECT_API_KEY`; `None`
/// when neither is set (the caller then reads it from the project).
pub fn project_key(
    file: Option<&Path>,
    env_value: Option<OsString>,
) -> Result<Option<SecretString>, ConfigError> {
    if let Some(path) = file {
        let field = format!("--project-api-key-file {}", path.display());
        return crate::key::read_key_file(path)
            .map(Some)
            .map_err(|message| ConfigError::new(field, message));
    }
    match env_value {
        Some(value) if !value.is_empty() => value
            .into_string()
            .map(|v| Some(SecretString::from(v)))
            .map_err(|_| ConfigError::new(PROJECT_KEY_ENV, "is not valid UTF-8")),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use posthog_client::Region;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        move |name| map.get(name).cloned()
    }

    /// `--host` and `--project-id` as given; the key in the environment.
    fn with_key<'a>(host: Option<&'a str>, project_id: Option<&'a str>) -> ConnectionFlags<'a> {
        ConnectionFlags {
            host,
            project_id,
            api_key_file: Some(Path::new("/run/secrets/key")),
            ..ConnectionFlags::default()
        }
    }

    #[test]
    fn flags_win_over_the_environment() {
        let config = agent_config(
            with_key(Some("eu"), Some("42")),
            env(&[(PROJECT_ENV, "7"), (HOST_ENV, "us")]),
        )
        .unwrap();
        assert_eq!(config.connection.project_id, "42");
        assert_eq!(config.connection.region, Region::Eu);
    }

    #[test]
    fn environment_fills_what_flags_leave_out_and_cloud_hosts_map_to_regions() {
        let config = agent_config(
            ConnectionFlags::default(),
            env(&[
                (PROJECT_ENV, "7"),
                (HOST_ENV, "https://eu.i.posthog.com/"),
                (KEY_ENV, "phx_k"),
            ]),
        )
        .unwrap();
        assert_eq!(config.connection.project_id, "7");
        assert_eq!(config.connection.region, Region::Eu);
        let us = agent_config(with_key(Some("us.posthog.com"), Some("1")), env(&[])).unwrap();
        assert_eq!(us.connection.region, Region::Us);
    }

    #[test]
    fn other_hosts_are_self_hosted_and_follow_the_https_rule() {
        let local =
            agent_config(with_key(Some("http://127.0.0.1:8000"), Some("1")), env(&[])).unwrap();
        assert!(matches!(local.connection.region, Region::SelfHosted(_)));
        let err = agent_config(
            with_key(Some("http://posthog.example.com"), Some("1")),
            env(&[]),
        )
        .unwrap_err();
        assert_eq!(err.field, "--host", "{err}");
        let err =
            agent_config(with_key(None, Some("1")), env(&[(HOST_ENV, "ftp://x")])).unwrap_err();
        assert_eq!(err.field, HOST_ENV, "{err}");
    }

    #[test]
    fn every_missing_setting_is_named_in_one_error_and_the_host_has_no_default() {
        let err = agent_config(ConnectionFlags::default(), env(&[])).unwrap_err();
        assert_eq!(err.field, "connection");
        assert_eq!(
            err.message,
            "missing the host (--host HOST or POSTHOG_HOST: us, eu or a base URL), the project \
             id (--project-id ID or POSTHOG_PROJECT_ID) and the personal API key \
             (--api-key-file PATH or POSTHOG_PERSONAL_API_KEY); or pass --config FILE"
        );
        // Only the host missing: it is not defaulted to PostHog Cloud US.
        let err = agent_config(with_key(None, Some("1")), env(&[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "connection: missing the host (--host HOST or POSTHOG_HOST: us, eu or a base URL); \
             or pass --config FILE"
        );
        // An empty variable counts as unset.
        let err = agent_config(
            ConnectionFlags {
                host: Some("eu"),
                ..ConnectionFlags::default()
            },
            env(&[(PROJECT_ENV, ""), (KEY_ENV, "")]),
        )
        .unwrap_err();
        assert!(err.message.starts_with("missing the project id"), "{err}");
        assert!(err.message.contains(" and the personal API key"), "{err}");
        assert!(!err.message.contains("the host"), "{err}");
    }

    #[test]
    fn a_bad_project_id_names_where_it_came_from() {
        let err =
            agent_config(with_key(Some("eu"), None), env(&[(PROJECT_ENV, "abc")])).unwrap_err();
        assert_eq!(err.field, PROJECT_ENV, "{err}");
        let err = agent_config(with_key(Some("eu"), Some("abc")), env(&[])).unwrap_err();
        assert_eq!(err.field, "--project-id", "{err}");
    }
}
