//! Whatever text arrives as a config, parsing returns a value or an error: it never panics.

use posthog_osiris::ExtractConfig;
use proptest::prelude::*;

/// Fragments of real configs, so generated documents get past the YAML parser and reach the
/// shape and value checks, not only syntax errors.
const FRAGMENTS: [&str; 16] = [
    "resolved_connection:\n",
    "  api_key: phx_x\n",
    "  project_id: ",
    "  region: self_hosted\n",
    "  custom_base_url: http://[::1]:",
    "config:\n",
    "  source:\n",
    "    page_size: ",
    "    initial_since: ",
    "    data_type: persons\n",
    "  destination: {table_name: ",
    "performance: {retries: {backoff_factor: ",
    "inputs: {state: {t: ",
    "- ",
    "&a [*a, ",
    "{\"json\": [",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = ExtractConfig::from_yaml_str(&text);
    }

    #[test]
    fn config_like_text_never_panics(
        parts in proptest::collection::vec((0..FRAGMENTS.len(), any::<String>(), any::<i64>()), 0..12)
    ) {
        let mut text = String::new();
        for (fragment, junk, number) in parts {
            text.push_str(FRAGMENTS[fragment]);
            if number % 2 == 0 {
                text.push_str(&number.to_string());
            } else {
                text.push_str(&junk);
            }
            text.push('\n');
        }
        let _ = ExtractConfig::from_yaml_str(&text);
    }
}
