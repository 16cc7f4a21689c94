//! [`ConfigError`]: one message naming the field at fault, free of secrets.
//!
//! Errors come from three places: YAML syntax (field `<document>`, or the file's path when the
//! config was read from a file), the shape of the document
//! (serde, through `serde_path_to_error`, so the path is exact), and the validation of values.
//! serde's wording is rewritten here into the same style as the validation messages.

use posthog_client::redact_secrets;
use posthog_error::{Categorized, Category};

/// The one field path whose value must never be echoed, whatever went wrong with it.
pub(crate) const API_KEY_FIELD: &str = "resolved_connection.api_key";

/// The field of an error about a document as a whole (YAML syntax, not a mapping) when the
/// document has no name: it was given as text or as a value. Read from a file, the error
/// names the file instead ([`ConfigError::in_file`]).
pub(crate) const DOCUMENT_FIELD: &str = "<document>";

/// A config that cannot be used: which field, and what is wrong with it.
///
/// Displays as `{field}: {message}`, e.g.
/// `config.source.page_size: 70000 is out of range 100..=50000`. `field` is the path as written
/// in the document (`config.source.event_types[2]`). An error about the document as a whole (a
/// YAML syntax error, a document that is not a mapping, a file that cannot be read) names the
/// file as it was given to [`ExtractConfig::from_path`](crate::ExtractConfig::from_path)
/// (`config.yaml: unclosed bracket '[' at line 1, column 4`), or `<document>` when the config
/// was parsed from text or a value. Messages never contain an API key: PostHog keys
/// (`phx_…`, `phc_…`, `phs_…`) are redacted wherever they appear, and the value of `api_key` is
/// never quoted. That is why the parsers' errors are kept as redacted text, not as a
/// [`source()`](std::error::Error::source): a source would print the value unredacted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// Path of the offending field, e.g. `resolved_connection.region`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    /// An error for `field`. Any PostHog key in `message` is redacted.
    pub fn new(field: impl Into<String>, message: impl AsRef<str>) -> ConfigError {
        ConfigError {
            field: field.into(),
            message: redact_secrets(message.as_ref()).into_owned(),
        }
    }

    /// The error category, as the CLI and the Osiris runtime report it: always
    /// [`Category::Config`].
    pub fn category(&self) -> Category {
        Category::Config
    }

    /// A YAML syntax error. Snippets are disabled when parsing, so the message quotes no line
    /// of the document (which may hold the key); it ends with `at line L, column C`.
    pub(crate) fn yaml(err: &serde_saphyr::Error) -> ConfigError {
        ConfigError::new(DOCUMENT_FIELD, err.to_string())
    }

    /// This error as found in the file `path`: an error about the whole document names the
    /// file; one about a field keeps the field's path.
    pub(crate) fn in_file(self, path: &std::path::Path) -> ConfigError {
        if self.field != DOCUMENT_FIELD {
            return self;
        }
        ConfigError {
            field: path.display().to_string(),
            ..self
        }
    }

    /// A serde error while mapping the document onto the raw config structs.
    pub(crate) fn shape(err: &serde_path_to_error::Error<serde_json::Error>) -> ConfigError {
        let path = err.path().to_string();
        let (field, message) = humanize(&path, &err.inner().to_string());
        if field == API_KEY_FIELD {
            return ConfigError::new(field, "expected a string (the value is not shown)");
        }
        ConfigError::new(field, message)
    }
}

impl Categorized for ConfigError {
    fn category(&self) -> Category {
        ConfigError::category(self)
    }
}

/// `path.name`, or `name` alone at the document root.
pub(crate) fn join(path: &str, name: &str) -> String {
    if path.is_empty() || path == "." {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// Rewrites serde's wording (`missing field `x``, `unknown field `x`, expected one of …`,
/// `invalid type: A, expected B`) into `(field, message)` in this crate's style.
fn humanize(path: &str, message: &str) -> (String, String) {
    if let Some(name) = between(message, "missing field `", "`") {
        return (join(path, name), "missing".to_owned());
    }
    if let Some(rest) = message.strip_prefix("unknown field `") {
        return (path.to_owned(), unknown_field(rest));
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((found, expected)) = rest.rsplit_once(", expected ")
        {
            return (
                path.to_owned(),
                format!(
                    "expected {}, found {}",
                    plain_expected(expected),
                    plain_found(found)
                ),
            );
        }
    }
    (path.to_owned(), message.to_owned())
}

/// `pagesize`, expected one of `page_size`, `event_types`` → `unknown field (did you mean
/// page_size? expected one of page_size, event_types)`.
fn unknown_field(rest: &str) -> String {
    let Some((given, tail)) = rest.split_once('`') else {
        return "unknown field".to_owned();
    };
    let tail = tail.trim_start_matches(',').trim();
    if tail == "there are no fields" {
        return "unknown field (no fields are accepted here)".to_owned();
    }
    let names: Vec<&str> = tail
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| !s.is_empty())
        .collect();
    let expected = match names.as_slice() {
        [] => String::new(),
        [one] => format!("expected {one}"),
        many => format!("expected one of {}", many.join(", ")),
    };
    match names.iter().find(|name| looks_like(given, name)) {
        Some(name) => format!("unknown field (did you mean {name}? {expected})"),
        None if expected.is_empty() => "unknown field".to_owned(),
        None => format!("unknown field ({expected})"),
    }
}

/// serde's name for a primitive → what a config author calls it.
fn plain_expected(expected: &str) -> &str {
    match expected {
        "i8" | "i16" | "i32" | "i64" | "i128" | "u8" | "u16" | "u32" | "u64" | "u128" => {
            "an integer"
        }
        "f32" | "f64" => "a number",
        "a map" => "a mapping",
        other => other,
    }
}

/// serde's name for what it found → the YAML word for it.
fn plain_found(found: &str) -> &str {
    match found {
        "sequence" => "a sequence",
        "map" => "a mapping",
        "unit value" => "null",
        other => other,
    }
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = text.strip_prefix(start)?;
    rest.split_once(end).map(|(inside, _)| inside)
}

/// A probable misspelling: same letters ignoring case and separators, or at most two edits.
fn looks_like(given: &str, candidate: &str) -> bool {
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| !matches!(c, '_' | '-' | ' '))
            .flat_map(char::to_lowercase)
            .collect()
    };
    // Field names are short; a long key cannot be two edits away, and is not worth the work.
    let comparable = (4..=64).contains(&given.len());
    squash(given) == squash(candidate) || (comparable && edit_distance(given, candidate) <= 2)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_are_rewritten_to_name_the_field() {
        assert_eq!(
            humanize("resolved_connection", "missing field `project_id`"),
            ("resolved_connection.project_id".into(), "missing".into())
        );
        assert_eq!(
            humanize(".", "missing field `resolved_connection`"),
            ("resolved_connection".into(), "missing".into())
        );
        assert_eq!(
            humanize(
                "config.source.pagesize",
                "unknown field `pagesize`, expected one of `data_type`, `page_size`"
            )
            .1,
            "unknown field (did you mean page_size? expected one of data_type, page_size)"
        );
        assert_eq!(
            humanize("x.zzz", "unknown field `zzz`, expected `format`").1,
            "unknown field (expected format)"
        );
        assert_eq!(
            humanize("p", "invalid type: floating point `1.5`, expected i128").1,
            "expected an integer, found floating point `1.5`"
        );
    }

    #[test]
    fn messages_are_redacted_even_when_built_from_input() {
        let err = ConfigError::new("x", "invalid type: string \"phx_SECRETKEY987\"");
        assert!(!err.to_string().contains("SECRETKEY987"), "{err}");
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("page_size", "page_size"), 0);
        assert_eq!(edit_distance("pagesize", "page_size"), 1);
        assert_eq!(edit_distance("regoin", "region"), 2);
    }
}
