//! Where the personal API key comes from when the config leaves it out.
//!
//! The rule: the config's `resolved_connection.api_key` if it has one; else the file given with
//! `--api-key-file` (a trailing newline ignored); else the `POSTHOG_PERSONAL_API_KEY`
//! environment variable; else a config error. The key is never a plain argument, and no
//! message here ever contains it.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read as _;
use std::path::Path;

use posthog_osiris::{ConfigError, Connection};
use secrecy::SecretString;

/// The environment variable the key is read from, last.
pub const KEY_ENV: &str = "POSTHOG_PERSONAL_API_KEY";

/// A key file larger than this is not a key file.
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// The connection with its key resolved by the rule above. `env_value` is the value of
/// [`KEY_ENV`] (the caller reads the environment; an empty value counts as unset).
pub fn resolve(
    connection: Connection,
    key_file: Option<&Path>,
    env_value: Option<OsString>,
) -> Result<Connection, ConfigError> {
    if connection.api_key.is_some() {
        if let Some(path) = key_file {
            tracing::warn!(
                path = %path.display(),
                "--api-key-file is ignored: the config has resolved_connection.api_key"
            );
        }
        return Ok(connection);
    }
    if let Some(path) = key_file {
        let field = format!("--api-key-file {}", path.display());
        let key = read_key_file(path).map_err(|message| ConfigError::new(&field, message))?;
        return connection
            .with_api_key(key)
            .map_err(|e| ConfigError::new(field, e.message));
    }
    match env_value {
        Some(value) if !value.is_empty() => {
            let value = value.into_string().map_err(|_| {
                ConfigError::new(KEY_ENV, "is not valid UTF-8 (the value is not shown)")
            })?;
            connection
                .with_api_key(SecretString::from(value))
                .map_err(|e| ConfigError::new(KEY_ENV, e.message))
        }
        _ => Err(ConfigError::new(
            "resolved_connection.api_key",
            format!(
                "missing: put the personal API key in the config, pass --api-key-file PATH, \
                 or set the {KEY_ENV} environment variable"
            ),
        )),
    }
}

/// The file's content without its trailing newline (`\n` or `\r\n`, repeated). The error
/// messages never quote the content.
pub(crate) fn read_key_file(path: &Path) -> Result<SecretString, String> {
    let mut text = String::new();
    File::open(path)
        .and_then(|file| file.take(MAX_KEY_FILE_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| format!("cannot read the key file: {e}"))?;
    let too_long = text.len() as u64 > MAX_KEY_FILE_BYTES;
    let key_len = text.trim_end_matches(['\n', '\r']).len();
    text.truncate(key_len);
    // Wrapped before any early return so that the buffer is zeroized on every path.
    let key = SecretString::from(text);
    if too_long {
        return Err(format!(
            "is larger than {MAX_KEY_FILE_BYTES} bytes; it must hold only the key"
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use posthog_osiris::ExtractConfig;
    use secrecy::ExposeSecret as _;

    use super::*;

    fn connection(with_key: bool) -> Connection {
        let key = if with_key {
            "api_key: phx_from_config, "
        } else {
            ""
        };
        let yaml = format!("resolved_connection: {{{key}project_id: \"7\", region: eu}}");
        ExtractConfig::from_yaml_str(&yaml)
            .expect("valid config")
            .connection
    }

    fn key_of(connection: &Connection) -> &str {
        connection
            .api_key
            .as_ref()
            .expect("has a key")
            .expose_secret()
    }

    fn key_file(content: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(content).expect("write");
        file
    }

    #[test]
    fn the_config_key_wins() {
        let file = key_file(b"phx_from_file\n");
        let resolved = resolve(
            connection(true),
            Some(file.path()),
            Some("phx_from_env".into()),
        )
        .expect("resolves");
        assert_eq!(key_of(&resolved), "phx_from_config");
    }

    #[test]
    fn the_file_comes_before_the_environment() {
        let file = key_file(b"phx_from_file\r\n\n");
        let resolved = resolve(
            connection(false),
            Some(file.path()),
            Some("phx_from_env".into()),
        )
        .expect("resolves");
        assert_eq!(key_of(&resolved), "phx_from_file");
    }

    #[test]
    fn the_environment_is_last() {
        let resolved =
            resolve(connection(false), None, Some("phx_from_env".into())).expect("resolves");
        assert_eq!(key_of(&resolved), "phx_from_env");
    }

    #[test]
    fn no_key_anywhere_names_the_field_and_both_ways() {
        for env in [None, Some(OsString::new())] {
            let err = resolve(connection(false), None, env).expect_err("missing");
            assert_eq!(err.field, "resolved_connection.api_key");
            assert!(err.message.contains("--api-key-file PATH"), "{err}");
            assert!(err.message.contains(KEY_ENV), "{err}");
        }
    }

    #[test]
    fn unusable_files_are_config_errors_that_do_not_quote_the_content() {
        let dir = tempfile::tempdir().expect("dir");
        let missing = dir.path().join("nope");
        let err = resolve(connection(false), Some(&missing), None).expect_err("missing file");
        assert!(err.field.starts_with("--api-key-file "), "{err}");
        assert!(err.message.starts_with("cannot read the key file"), "{err}");

        let empty = key_file(b"\n");
        let err = resolve(connection(false), Some(empty.path()), None).expect_err("empty");
        assert_eq!(err.message, "is empty");

        let project_key = key_file(b"phc_secret_project_key\n");
        let err =
            resolve(connection(false), Some(project_key.path()), None).expect_err("project key");
        assert!(err.message.contains("project API key"), "{err}");
        assert!(!err.to_string().contains("phc_secret_project_key"), "{err}");

        let spaced = key_file(b"phx_abc def\n");
        let err = resolve(connection(false), Some(spaced.path()), None).expect_err("space");
        assert!(!err.to_string().contains("phx_abc"), "{err}");

        let huge = key_file(&vec![b'a'; 5000]);
        let err = resolve(connection(false), Some(huge.path()), None).expect_err("huge");
        assert!(err.message.contains("larger than 4096 bytes"), "{err}");
    }

    #[test]
    fn a_bad_environment_value_names_the_variable_without_the_value() {
        let err = resolve(connection(false), None, Some("phs_secret_value".into()))
            .expect_err("secret key");
        assert_eq!(err.field, KEY_ENV);
        assert!(!err.to_string().contains("phs_secret_value"), "{err}");
    }
}
