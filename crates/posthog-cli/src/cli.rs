//! The command line: global options, subcommands and their help texts.

use std::path::{Path, PathBuf};

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};
use posthog_osiris::{LogLevel, OutputFormat};

/// The exit codes, as every `--help` lists them.
macro_rules! exit_codes {
    () => {
        "Exit codes:
  0  success (doctor: healthy)
  1  failed at run time: network, server, data (doctor: not healthy)
  2  usage or config error, a missing API key, a state file locked by another run
  3  authentication or permission error"
    };
}

/// Where the API key comes from, as every `--help` explains it.
macro_rules! api_key_help {
    () => {
        "API key:
  resolved_connection.api_key in the config; if the config leaves it out, the file given
  with --api-key-file PATH (e.g. a Docker or Kubernetes secret; a trailing newline is
  ignored), else the POSTHOG_PERSONAL_API_KEY environment variable. The key is never
  accepted as a command-line argument (it would show in `ps`)."
    };
}

/// The JSON error object printed on failure, as every `--help` describes it.
macro_rules! error_output_help {
    () => {
        "  On failure stdout holds {\"status\":\"error\",\"category\":\"<category>\",\"message\":\"...\"}
  and stderr the line `error: <category>: <message>`. Categories: config, auth,
  permission, network, timeout, rate_limited, server, data."
    };
}

const TOP_AFTER_HELP: &str = concat!(
    "Output:
  stdout holds exactly one JSON object per command; logs (text or JSON) and the progress
  bar go to stderr.
",
    error_output_help!(),
    "

",
    api_key_help!(),
    "

Examples:
  posthog-cli doctor --config config.yaml
  posthog-cli run --config config.yaml --output-dir ./posthog-output --format parquet
  posthog-cli --api-key-file /run/secrets/posthog_key discover --config config.yaml

",
    exit_codes!()
);

const RUN_AFTER_HELP: &str = concat!(
    "Output:
  Part files go to DIR/<table_name>/part-*.{parquet,jsonl,csv}; the state store is
  DIR/state.json unless --state-file says otherwise (one run per store at a time).
  On success stdout holds one JSON object, the run summary:
  {\"status\":\"success\",\"table\":...,\"rows_read\":...,\"rows_deduplicated\":...,
   \"rows_output\":...,\"files\":[...],\"requests\":...,\"retries\":...,\"duration_ms\":...,
   \"state\":{...}}
",
    error_output_help!(),
    "
  Logs go to stderr, with a progress bar when stderr is a terminal (not with --quiet).

",
    api_key_help!(),
    "

Examples:
  posthog-cli run --config config.yaml
  posthog-cli run --config config.yaml --output-dir /data/posthog --format jsonl
  posthog-cli --api-key-file /run/secrets/posthog_key extract --config config.yaml \\
      --state-file /var/lib/posthog/state.json

",
    exit_codes!()
);

const DISCOVER_AFTER_HELP: &str = concat!(
    "Output:
  On success stdout holds one JSON object:
  {\"resources\":[{\"name\",\"type\",\"description\",\"schema\"},...],
   \"fingerprint\":\"<sha256>\",\"discovered_at\":\"<RFC 3339>\"}
  Resources are sorted by name; the fingerprint is stable while the schemas are.
",
    error_output_help!(),
    "

",
    api_key_help!(),
    "

Example:
  posthog-cli discover --config config.yaml

",
    exit_codes!()
);

const DOCTOR_AFTER_HELP: &str = concat!(
    "Output:
  stdout holds one JSON object, the report:
  {\"status\":\"healthy\"|\"error\",\"category\":\"auth\"|\"permission\"|\"network\"|\"timeout\"|
   \"unknown\" (only when not healthy),\"message\":...,\"timestamp\":...,\"latency_ms\":...}
  A key PostHog rejects is reported in it (exit 1, category auth); an invalid config or a
  missing key exits 2.
",
    error_output_help!(),
    "

",
    api_key_help!(),
    "

Examples:
  posthog-cli doctor --config config.yaml
  posthog-cli doctor --config config.yaml --timeout-ms 5000

",
    exit_codes!()
);

/// Extract PostHog data incrementally, exactly once, into Parquet, JSONL or CSV files, and
/// check the connection to PostHog.
#[derive(Debug, Parser)]
#[command(name = "posthog-cli", version, after_help = TOP_AFTER_HELP)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,

    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes (before or after the command name).
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Log level [default: the config's logging.level, else info]
    #[arg(long, global = true, value_name = "LEVEL", value_parser = log_level_parser())]
    pub log_level: Option<LogLevel>,

    /// Log format; logs always go to stderr
    #[arg(
        long,
        global = true,
        value_name = "FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,

    /// Show no progress bar
    #[arg(long, short, global = true, visible_alias = "no-progress")]
    pub quiet: bool,

    /// Read the API key from this file when the config has none (trailing newline ignored)
    #[arg(long, global = true, value_name = "PATH")]
    pub api_key_file: Option<PathBuf>,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Extract the configured table incrementally, exactly once, and commit its state (the
    /// Osiris `run` step)
    #[command(visible_alias = "extract", after_help = RUN_AFTER_HELP)]
    Run(RunArgs),

    /// List the resources that can be extracted, with their schemas and a stable fingerprint
    #[command(after_help = DISCOVER_AFTER_HELP)]
    Discover(DiscoverArgs),

    /// Check authentication, project access and query permission
    #[command(after_help = DOCTOR_AFTER_HELP)]
    Doctor(DoctorArgs),
}

impl Command {
    /// The config file the command reads.
    pub fn config_path(&self) -> &Path {
        match self {
            Command::Run(args) => &args.config,
            Command::Discover(args) => &args.config,
            Command::Doctor(args) => &args.config,
        }
    }
}

/// `run` / `extract`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Config file (YAML or JSON, nested or flat shape)
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,

    /// Directory the tables' part files are written under
    #[arg(long, value_name = "DIR", default_value = "posthog-output")]
    pub output_dir: PathBuf,

    /// State store [default: DIR/state.json]
    #[arg(long, value_name = "FILE")]
    pub state_file: Option<PathBuf>,

    /// Part file format, overriding the config's output.format
    #[arg(long, value_name = "FORMAT", value_parser = output_format_parser())]
    pub format: Option<OutputFormat>,
}

impl RunArgs {
    /// The state store's path: `--state-file`, else `DIR/state.json`.
    pub fn state_path(&self) -> PathBuf {
        self.state_file
            .clone()
            .unwrap_or_else(|| self.output_dir.join("state.json"))
    }
}

/// `discover`.
#[derive(Debug, Args)]
pub struct DiscoverArgs {
    /// Config file (YAML or JSON, nested or flat shape)
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
}

/// `doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Config file (YAML or JSON, nested or flat shape)
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,

    /// How long all checks may take, in milliseconds
    #[arg(
        long,
        value_name = "N",
        default_value_t = 2000,
        value_parser = clap::value_parser!(u64).range(1..=600_000)
    )]
    pub timeout_ms: u64,
}

/// `parquet|jsonl|csv`, listed from [`OutputFormat::ALL`] and parsed by its `FromStr`.
fn output_format_parser() -> impl TypedValueParser<Value = OutputFormat> {
    PossibleValuesParser::new(
        OutputFormat::ALL
            .iter()
            .map(|f| PossibleValue::new(f.as_str())),
    )
    .try_map(|name| name.parse::<OutputFormat>())
}

/// `error|warn|info|debug|trace` (and the seeds' `warning`), parsed by [`LogLevel`]'s
/// `FromStr`.
fn log_level_parser() -> impl TypedValueParser<Value = LogLevel> {
    PossibleValuesParser::new(LogLevel::ALL.iter().map(|level| {
        let value = PossibleValue::new(level.as_str());
        if *level == LogLevel::Warn {
            value.alias("warning")
        } else {
            value
        }
    }))
    .try_map(|name| name.parse::<LogLevel>())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("posthog-cli").chain(args.iter().copied()))
    }

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_defaults() {
        let cli = parse(&["run", "--config", "c.yaml"]).expect("parses");
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.config, PathBuf::from("c.yaml"));
        assert_eq!(args.output_dir, PathBuf::from("posthog-output"));
        assert_eq!(
            args.state_path(),
            PathBuf::from("posthog-output/state.json")
        );
        assert_eq!(args.format, None);
        assert_eq!(cli.global.log_level, None);
        assert_eq!(cli.global.log_format, LogFormat::Text);
        assert!(!cli.global.quiet);
        assert_eq!(cli.global.api_key_file, None);
    }

    #[test]
    fn run_overrides_and_global_options_after_the_command() {
        let cli = parse(&[
            "extract",
            "-c",
            "c.yaml",
            "--output-dir",
            "out",
            "--state-file",
            "s.json",
            "--format",
            "csv",
            "--log-level",
            "warning",
            "--log-format",
            "json",
            "--quiet",
            "--api-key-file",
            "/run/secrets/k",
        ])
        .expect("parses");
        let Command::Run(args) = cli.command else {
            panic!("extract is not run")
        };
        assert_eq!(args.format, Some(OutputFormat::Csv));
        assert_eq!(args.state_path(), PathBuf::from("s.json"));
        assert_eq!(cli.global.log_level, Some(LogLevel::Warn));
        assert_eq!(cli.global.log_format, LogFormat::Json);
        assert!(cli.global.quiet);
        assert_eq!(
            cli.global.api_key_file,
            Some(PathBuf::from("/run/secrets/k"))
        );
    }

    #[test]
    fn global_options_before_the_command() {
        let cli = parse(&[
            "--no-progress",
            "--log-level",
            "debug",
            "discover",
            "-c",
            "x",
        ])
        .expect("parses");
        assert!(cli.global.quiet);
        assert_eq!(cli.global.log_level, Some(LogLevel::Debug));
        assert_eq!(cli.command.config_path(), Path::new("x"));
    }

    #[test]
    fn doctor_timeout_default_and_range() {
        let cli = parse(&["doctor", "--config", "c.yaml"]).expect("parses");
        let Command::Doctor(args) = cli.command else {
            panic!("not doctor")
        };
        assert_eq!(args.timeout_ms, 2000);
        assert!(parse(&["doctor", "--config", "c", "--timeout-ms", "0"]).is_err());
        assert!(parse(&["doctor", "--config", "c", "--timeout-ms", "250"]).is_ok());
    }

    #[test]
    fn usage_errors_exit_with_2() {
        for args in [
            &["run"][..],
            &["run", "--config", "c", "--format", "xml"],
            &["run", "--config", "c", "--log-level", "loud"],
            &["query", "select 1"],
            &["run", "--config", "c", "--api-key", "phx_x"],
            &[],
        ] {
            let err = parse(args).expect_err("rejected");
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
    }

    #[test]
    fn every_help_has_an_example_and_the_exit_codes() {
        let mut root = Cli::command();
        root.build();
        let mut helps = vec![root.render_long_help().to_string()];
        for sub in root
            .get_subcommands_mut()
            .filter(|s| s.get_name() != "help")
        {
            helps.push(sub.render_long_help().to_string());
        }
        assert_eq!(helps.len(), 4);
        for help in helps {
            assert!(help.contains("Example"), "{help}");
            assert!(help.contains("Exit codes:"), "{help}");
            assert!(help.contains("3  authentication or permission error"));
            assert!(help.contains("POSTHOG_PERSONAL_API_KEY"), "{help}");
            assert!(help.contains("\"status\":\"error\""), "{help}");
        }
    }
}
