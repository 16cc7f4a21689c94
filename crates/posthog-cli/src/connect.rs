//! How the agent commands find PostHog when no config file is given: `--host` / `--project-id`,
//! else `POSTHOG_HOST` / `POSTHOG_PROJECT_ID`. The result is an ordinary validated
//! [`ExtractConfig`], so the same rules apply as for a config file (numeric project id, `https://`
//! except on loopback, …).

use std::ffi::OsString;
use std::path::Path;

use posthog_osiris::{ConfigError, ExtractConfig};
use secrecy::SecretString;
use serde_json::json;

/// Environment variable holding the project id.
pub const PROJECT_ENV: &str = "POSTHOG_PROJECT_ID";
/// Environment variable holding the host.
pub const HOST_ENV: &str = "POSTHOG_HOST";
/// Environment variable holding the project API key (capture, flags).
pub const PROJECT_KEY_ENV: &str = "POSTHOG_PROJECT_API_KEY";

/// The config an agent command runs with. `env` reads one environment variable (the caller
/// owns the environment; tests pass a map).
pub fn agent_config(
    config: Option<&Path>,
    host: Option<&str>,
    project_id: Option<&str>,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<ExtractConfig, ConfigError> {
    if let Some(path) = config {
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
    let (project_field, project_id) = match project_id {
        Some(id) => ("--project-id", id.to_owned()),
        None => match text(PROJECT_ENV)? {
            Some(id) => (PROJECT_ENV, id),
            None => {
                return Err(ConfigError::new(
                    "--project-id",
                    format!(
                        "missing: pass --config FILE, or --project-id ID, or set {PROJECT_ENV}"
                    ),
                ));
            }
        },
    };
    let (host_field, host) = match host {
        Some(h) => ("--host", h.to_owned()),
        None => match text(HOST_ENV)? {
            Some(h) => (HOST_ENV, h),
            None => ("--host", "us".to_owned()),
        },
    };
    let connection = match region_of(&host) {
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
            "resolved_connection.project_id" => project_field,
            f if f.starts_with("resolved_connection") => host_field,
            _ => return e,
        };
        ConfigError::new(field, e.message)
    })
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

    #[test]
    fn flags_win_over_the_environment() {
        let config = agent_config(
            None,
            Some("eu"),
            Some("42"),
            env(&[(PROJECT_ENV, "7"), (HOST_ENV, "us")]),
        )
        .unwrap();
        assert_eq!(config.connection.project_id, "42");
        assert_eq!(config.connection.region, Region::Eu);
    }

    #[test]
    fn environment_fills_what_flags_leave_out_and_cloud_hosts_map_to_regions() {
        let config = agent_config(
            None,
            None,
            None,
            env(&[(PROJECT_ENV, "7"), (HOST_ENV, "https://eu.i.posthog.com/")]),
        )
        .unwrap();
        assert_eq!(config.connection.project_id, "7");
        assert_eq!(config.connection.region, Region::Eu);
        let us = agent_config(None, None, Some("1"), env(&[])).unwrap();
        assert_eq!(us.connection.region, Region::Us);
    }

    #[test]
    fn other_hosts_are_self_hosted_and_follow_the_https_rule() {
        let local = agent_config(None, Some("http://127.0.0.1:8000"), Some("1"), env(&[])).unwrap();
        assert!(matches!(local.connection.region, Region::SelfHosted(_)));
        let err = agent_config(
            None,
            Some("http://posthog.example.com"),
            Some("1"),
            env(&[]),
        )
        .unwrap_err();
        assert_eq!(err.field, "--host", "{err}");
        let err = agent_config(None, None, Some("1"), env(&[(HOST_ENV, "ftp://x")])).unwrap_err();
        assert_eq!(err.field, HOST_ENV, "{err}");
    }

    #[test]
    fn a_missing_or_bad_project_id_names_where_it_came_from() {
        let err = agent_config(None, None, None, env(&[])).unwrap_err();
        assert_eq!(err.field, "--project-id");
        assert!(err.message.contains(PROJECT_ENV), "{err}");
        let err = agent_config(None, None, None, env(&[(PROJECT_ENV, "abc")])).unwrap_err();
        assert_eq!(err.field, PROJECT_ENV, "{err}");
    }
}
