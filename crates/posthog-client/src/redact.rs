//! Redaction of PostHog keys from any text we log or keep.
//!
//! Keys are held as [`secrecy::SecretString`] and only exposed when a header or body is built.
//! Text that may contain one anyway (server error bodies, request bodies logged with
//! `verbose_http`) passes through [`redact_secrets`] first.

use std::borrow::Cow;

/// Prefixes of PostHog credentials: personal API keys, project API keys (tokens) and project
/// secret keys.
const KEY_PREFIXES: [&str; 3] = ["phx_", "phc_", "phs_"];

/// Replaces every PostHog key in `text` (`phx_…`, `phc_…`, `phs_…`) by its prefix and `***`.
///
/// A key is the prefix followed by one or more ASCII letters, digits, `_` or `-`.
///
/// ```
/// use posthog_client::redact_secrets;
/// assert_eq!(redact_secrets("key phx_Abc123 here"), "key phx_*** here");
/// assert_eq!(redact_secrets("nothing to hide"), "nothing to hide");
/// ```
pub fn redact_secrets(text: &str) -> Cow<'_, str> {
    if !KEY_PREFIXES.iter().any(|p| text.contains(p)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((at, prefix)) = next_key(rest) {
        out.push_str(&rest[..at]);
        out.push_str(prefix);
        let tail = &rest[at + prefix.len()..];
        let key_len = tail
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
            .count();
        if key_len > 0 {
            out.push_str("***");
        }
        rest = &tail[key_len..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

fn next_key(text: &str) -> Option<(usize, &'static str)> {
    KEY_PREFIXES
        .iter()
        .filter_map(|p| text.find(p).map(|at| (at, *p)))
        .min_by_key(|(at, _)| *at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_kind_is_redacted_wherever_it_appears() {
        let text = r#"{"api_key":"phc_project123","auth":"Bearer phx_Personal-Key_9"} phs_secret"#;
        let out = redact_secrets(text);
        assert_eq!(
            out,
            r#"{"api_key":"phc_***","auth":"Bearer phx_***"} phs_***"#
        );
    }

    #[test]
    fn text_without_keys_is_borrowed_unchanged() {
        assert!(matches!(redact_secrets("plain"), Cow::Borrowed("plain")));
    }

    #[test]
    fn a_bare_prefix_is_left_alone() {
        assert_eq!(redact_secrets("phx_ and phc_."), "phx_ and phc_.");
    }

    #[test]
    fn multibyte_text_around_keys_survives() {
        assert_eq!(redact_secrets("ключ phx_abc → ok"), "ключ phx_*** → ok");
    }
}
