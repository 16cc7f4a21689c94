//! The command line: global options, subcommands and their help texts.

use std::path::{Path, PathBuf};

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};
use posthog_osiris::{LogLevel, OutputFormat};
use posthog_storage::Location;

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
  and stderr the line `error: <category>: <message>`; a command line that does not parse
  is category config, with clap's message on stderr. Categories: config, auth,
  permission, network, timeout, rate_limited, server, data, unknown."
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
  posthog-cli query --config config.yaml \"select event, count() from events group by event\"
  posthog-cli template run churn_risk --host us --project-id 12345 --var inactive_days=14

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
  Not healthy is a failure like any other command's: the same error object (with
  timestamp and latency_ms added) and the `error: <category>: <message>` line on stderr,
  exit 1 whatever the category (a key PostHog rejects: category auth, exit 1). An invalid
  config or a missing key exits 2 without a report.
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

/// Connection resolution for the agent commands, as their `--help` explains it.
macro_rules! connection_help {
    () => {
        "Connection:
  --config FILE takes it from a config (as `run` uses); otherwise --host / --project-id,
  else the POSTHOG_HOST / POSTHOG_PROJECT_ID environment variables. The personal API key
  comes from the config, --api-key-file PATH or POSTHOG_PERSONAL_API_KEY; it is never
  accepted as a command-line argument. Nothing is defaulted, the host included: every
  setting that is missing is named in one error (exit 2), with the flag and the variable
  that provide it."
    };
}

/// What the commands that send nothing do with the connection options, as their `--help`
/// says it.
macro_rules! offline_connection_help {
    () => {
        "Connection:
  None is needed and nothing is sent. The connection options are accepted so that one
  command line fits every command: --config FILE, when given, is read and validated (a file
  that is not a valid config exits 2, as it would for any other command); --host,
  --project-id and the API key (--api-key-file, POSTHOG_PERSONAL_API_KEY) are not used."
    };
}

/// The common tail of an agent command's help: output rule, connection, exit codes.
macro_rules! agent_help {
    ($output:expr, $examples:expr) => {
        concat!(
            "Output:\n",
            $output,
            "\n",
            error_output_help!(),
            "\n\n",
            connection_help!(),
            "\n\nExamples:\n",
            $examples,
            "\n\n",
            exit_codes!()
        )
    };
}

/// The common tail of the help of a command that sends nothing (`objects`, `template list`,
/// `template show`).
macro_rules! offline_agent_help {
    ($output:expr, $examples:expr) => {
        concat!(
            "Output:\n",
            $output,
            "\n",
            error_output_help!(),
            "\n\n",
            offline_connection_help!(),
            "\n\nExamples:\n",
            $examples,
            "\n\n",
            exit_codes!()
        )
    };
}

const QUERY_AFTER_HELP: &str = agent_help!(
    "  json (default): one object {\"columns\",\"types\",\"rows\":[{column: value}],\"row_count\"};
  jsonl: one object per row; csv: header and rows; table: aligned text. Rows are written
  as they are read. A query without LIMIT returns PostHog's first 100 rows (has_more tells);
  LIMIT is capped at 50 000 by PostHog. OFFSET is refused for API keys: page with
  WHERE (timestamp, uuid) > (…) instead.",
    "  posthog-cli query --host us --project-id 12345 \"select event, count() as n from events group by event order by n desc limit 10\"
  posthog-cli query -c config.yaml --var name='$pageview' --format csv \\
      \"select distinct_id, timestamp from events where event = {name} limit 100\"
  echo \"select count() from persons\" | posthog-cli query -c config.yaml -"
);

const OBJECTS_AFTER_HELP: &str = offline_agent_help!(
    "  {\"objects\":[{\"name\",\"description\",\"hogql_table\",\"rest_resource\"},...]}
  The list is fixed (`fields NAME` reads an entity's fields from PostHog).",
    "  posthog-cli objects
  posthog-cli objects --config config.yaml"
);

const FIELDS_AFTER_HELP: &str = agent_help!(
    "  {\"object\":NAME,\"fields\":[{\"name\",\"type\",\"description\"?,\"source\"},...]}
  source is schema (HogQL column types), property_definition (events and persons:
  properties.<name> with PostHog's property_type), sample (keys of a listed object) or
  documented.",
    "  posthog-cli fields events --host eu --project-id 12345
  posthog-cli fields feature_flags -c config.yaml"
);

const TEMPLATE_LIST_AFTER_HELP: &str = offline_agent_help!(
    "  {\"templates\":[{\"name\",\"category\",\"description\",\"params\":[...]}]}",
    "  posthog-cli template list
  posthog-cli template list --config config.yaml"
);

const TEMPLATE_SHOW_AFTER_HELP: &str = offline_agent_help!(
    "  The template: name, category, description, params (name, type, bounds, default,
  description) and the HogQL text with its {placeholders}.",
    "  posthog-cli template show funnel_conversion"
);

const TEMPLATE_RUN_AFTER_HELP: &str = agent_help!(
    "  As `query` (--format json|jsonl|csv|table). Every variable is checked against its type
  and range and bound as a HogQL value: it can never change the query's text. An unknown,
  missing or invalid variable exits 2 before any request.",
    "  posthog-cli template run churn_risk -c config.yaml --var inactive_days=14
  posthog-cli template run funnel_conversion --host us --project-id 12345 \\
      --var step_1='$pageview' --var step_2=signed_up --format table"
);

const COMPLETIONS_AFTER_HELP: &str = concat!(
    "Output:
  The completion script on stdout (not JSON); nothing is sent anywhere. --config FILE is
  accepted like every command's and, when given, read and validated (exit 2 if invalid).
  A usage error prints {\"status\":\"error\",...} on stdout, as every command does.

Examples:
  posthog-cli completions bash > ~/.local/share/bash-completion/completions/posthog-cli
  posthog-cli completions zsh > \"${fpath[1]}/_posthog-cli\"
  posthog-cli completions fish > ~/.config/fish/completions/posthog-cli.fish

",
    exit_codes!()
);

const MAN_AFTER_HELP: &str = concat!(
    "Output:
  The man page of posthog-cli in roff on stdout (not JSON). --config FILE is accepted like
  every command's and, when given, read and validated (exit 2 if invalid). A usage error
  prints {\"status\":\"error\",...} on stdout, as every command does.

Example:
  posthog-cli man > /usr/local/share/man/man1/posthog-cli.1 && man posthog-cli

",
    exit_codes!()
);

const TEMPLATE_AFTER_HELP: &str = agent_help!(
    "  list and show print one JSON object and send nothing (they need no connection; a
  --config given is validated); run prints rows like `query`.",
    "  posthog-cli template list
  posthog-cli template show churn_risk
  posthog-cli template run churn_risk -c config.yaml --var inactive_days=14"
);

const FLAGS_AFTER_HELP: &str = agent_help!(
    "  One JSON object: the evaluated flag, or the list of flags.",
    "  posthog-cli flags list -c config.yaml
  posthog-cli flags evaluate new-dashboard --distinct-id user-42 -c config.yaml"
);

const COHORTS_AFTER_HELP: &str = agent_help!(
    "  One JSON object: the cohorts, the created cohort, or the persons of one.",
    "  posthog-cli cohorts list -c config.yaml
  posthog-cli cohorts persons 42 -c config.yaml"
);

const CAPTURE_AFTER_HELP: &str = agent_help!(
    "  {\"status\":\"ok\",\"events\":N,\"requests\":N,\"uuids\":[...]} (uuids for a single event)
  Capture needs the project API key (phc_…): --project-api-key-file PATH, else
  POSTHOG_PROJECT_API_KEY, else it is read from the project with the personal key.
  A batch is read and checked whole before anything is sent; events without a uuid get one
  derived from their content when they have a timestamp (so re-sending is harmless), else a
  random one.",
    "  posthog-cli capture signed_up --distinct-id user-42 -p plan=pro -p seats=3 -c config.yaml
  posthog-cli capture --batch -c config.yaml < events.jsonl"
);

const FLAGS_EVALUATE_AFTER_HELP: &str = agent_help!(
    "  {\"key\",\"enabled\",\"variant\",\"reason\",\"payload\"} for the flag; a flag PostHog does not
  return (unknown or inactive) is an error with category config. Needs the project API
  key (see `capture --help`).",
    "  posthog-cli flags evaluate new-dashboard --distinct-id user-42 -c config.yaml"
);

const FLAGS_LIST_AFTER_HELP: &str = agent_help!(
    "  {\"flags\":[...]}: the project's feature flags as PostHog lists them.",
    "  posthog-cli flags list -c config.yaml"
);

const COHORTS_LIST_AFTER_HELP: &str = agent_help!(
    "  {\"cohorts\":[...]}: the project's cohorts as PostHog lists them.",
    "  posthog-cli cohorts list --host eu --project-id 12345"
);

const COHORTS_CREATE_AFTER_HELP: &str = agent_help!(
    "  The created cohort, with its id. Creating is not idempotent: only a 429 is retried.",
    "  posthog-cli cohorts create \"Pro users\" -c config.yaml \\
      --filters '{\"properties\":{\"type\":\"AND\",\"values\":[{\"key\":\"plan\",\"value\":\"pro\",\"type\":\"person\",\"operator\":\"exact\"}]}}'"
);

const COHORTS_PERSONS_AFTER_HELP: &str = agent_help!(
    "  {\"cohort\":ID,\"persons\":[...],\"count\":N}",
    "  posthog-cli cohorts persons 42 -c config.yaml --limit 100"
);

const MCP_AFTER_HELP: &str = agent_help!(
    "  JSON-RPC messages of the Model Context Protocol on stdout; logs on stderr. Tools:
  list_objects, get_fields {name}, query {hogql, values?}, list_templates,
  run_template {name, vars?}. Query results are capped at 1 000 rows per call.",
    "  posthog-cli mcp -c config.yaml
  Claude Desktop / Code config: {\"command\": \"posthog-cli\", \"args\": [\"mcp\", \"-c\", \"/path/config.yaml\"]}"
);

/// Extract PostHog data incrementally, exactly once, into Parquet, JSONL or CSV files; query
/// PostHog with HogQL and ready-made templates; capture events, evaluate flags, manage cohorts;
/// and serve all of it to AI agents over MCP.
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

    /// Read the project API key (phc_…, for capture and flags) from this file
    /// [env: POSTHOG_PROJECT_API_KEY; default: read from the project]
    #[arg(long, global = true, value_name = "PATH")]
    pub project_api_key_file: Option<PathBuf>,
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

    /// Run a HogQL query and print its rows (values bound with --var, never spliced)
    #[command(after_help = QUERY_AFTER_HELP)]
    Query(QueryArgs),

    /// List the entity types of a PostHog project (events, persons, cohorts, …)
    #[command(after_help = OBJECTS_AFTER_HELP)]
    Objects(ObjectsArgs),

    /// List the fields of one entity type, with types from PostHog's schema and property
    /// definitions
    #[command(after_help = FIELDS_AFTER_HELP)]
    Fields(FieldsArgs),

    /// List, show and run the pre-built HogQL templates (churn risk, power users, funnels, …)
    #[command(subcommand, after_help = TEMPLATE_AFTER_HELP)]
    Template(TemplateCommand),

    /// Capture one event, or a JSONL batch from stdin, with idempotent UUIDs
    #[command(after_help = CAPTURE_AFTER_HELP)]
    Capture(CaptureArgs),

    /// Evaluate and list feature flags
    #[command(subcommand, after_help = FLAGS_AFTER_HELP)]
    Flags(FlagsCommand),

    /// List and create cohorts, and list the persons in one
    #[command(subcommand, after_help = COHORTS_AFTER_HELP)]
    Cohorts(CohortsCommand),

    /// Serve list_objects, get_fields, query and run_template to an AI agent over the Model
    /// Context Protocol on stdin/stdout
    #[command(after_help = MCP_AFTER_HELP)]
    Mcp(McpArgs),

    /// Print a shell completion script
    #[command(after_help = COMPLETIONS_AFTER_HELP)]
    Completions(CompletionsArgs),

    /// Print the man page (roff)
    #[command(after_help = MAN_AFTER_HELP)]
    Man(ManArgs),
}

/// `completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// Config file; validated when given, not otherwise used
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The shell
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// `man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Config file; validated when given, not otherwise used
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl Command {
    /// The `--config` the command was given: always for `run`, `discover` and `doctor`, which
    /// require it; when given for the others.
    pub fn config_path(&self) -> Option<&Path> {
        match self {
            Command::Run(args) => Some(&args.config),
            Command::Discover(args) => Some(&args.config),
            Command::Doctor(args) => Some(&args.config),
            Command::Completions(args) => args.config.as_deref(),
            Command::Man(args) => args.config.as_deref(),
            command => command.connection()?.config.as_deref(),
        }
    }

    /// Whether the command sends nothing and so needs no connection (`objects`, `template
    /// list`, `template show`, `completions`, `man`). A `--config` given to it is validated,
    /// nothing else of the connection is used.
    pub fn is_offline(&self) -> bool {
        matches!(
            self,
            Command::Objects(_)
                | Command::Template(TemplateCommand::List(_) | TemplateCommand::Show(_))
                | Command::Completions(_)
                | Command::Man(_)
        )
    }

    /// The connection options of an agent command.
    pub fn connection(&self) -> Option<&ConnectionArgs> {
        Some(match self {
            Command::Query(a) => &a.connection,
            Command::Objects(a) => &a.connection,
            Command::Fields(a) => &a.connection,
            Command::Template(TemplateCommand::List(a)) => &a.connection,
            Command::Template(TemplateCommand::Show(a)) => &a.connection,
            Command::Template(TemplateCommand::Run(a)) => &a.connection,
            Command::Capture(a) => &a.connection,
            Command::Flags(FlagsCommand::Evaluate(a)) => &a.connection,
            Command::Flags(FlagsCommand::List(a)) => &a.connection,
            Command::Cohorts(CohortsCommand::List(a)) => &a.connection,
            Command::Cohorts(CohortsCommand::Create(a)) => &a.connection,
            Command::Cohorts(CohortsCommand::Persons(a)) => &a.connection,
            Command::Mcp(a) => &a.connection,
            _ => return None,
        })
    }
}

/// How an agent command finds PostHog: a config file, else flags, else the environment.
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// Config file to take the connection (and timeouts, retries, logging) from
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// PostHog host: us, eu, or a base URL (https://…; http:// only for localhost)
    /// [env: POSTHOG_HOST; required without --config]
    #[arg(long, value_name = "HOST", conflicts_with = "config")]
    pub host: Option<String>,

    /// Numeric project id [env: POSTHOG_PROJECT_ID; required without --config]
    #[arg(long, value_name = "ID", conflicts_with = "config")]
    pub project_id: Option<String>,
}

/// How query rows are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RowFormat {
    /// One JSON object: columns, types, rows (as objects) and row_count.
    Json,
    /// One JSON object per row.
    Jsonl,
    /// A header line, then one line per row (RFC 4180 quoting).
    Csv,
    /// Aligned columns for people; long values are cut at 60 characters.
    Table,
}

/// `query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,

    /// Output format
    #[arg(long, short, value_enum, default_value_t = RowFormat::Json)]
    pub format: RowFormat,

    /// Bind {KEY} in the query to VALUE (a number when it parses as one, else text); repeatable
    #[arg(long = "var", value_name = "KEY=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,

    /// Run the query asynchronously (queued, then polled), for queries that take longer than
    /// one request's timeout
    #[arg(long = "async")]
    pub asynchronous: bool,

    /// The HogQL query; `-` reads it from stdin
    #[arg(value_name = "HOGQL")]
    pub hogql: String,
}

/// `objects`.
#[derive(Debug, Args)]
pub struct ObjectsArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// `fields`.
#[derive(Debug, Args)]
pub struct FieldsArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,

    /// The entity type, as `objects` lists it (e.g. events, persons, feature_flags)
    #[arg(value_name = "NAME")]
    pub name: String,
}

/// `template …`.
#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// List the templates with their descriptions and variables
    #[command(after_help = TEMPLATE_LIST_AFTER_HELP)]
    List(TemplateListArgs),
    /// Show one template: description, variables with types and defaults, HogQL
    #[command(after_help = TEMPLATE_SHOW_AFTER_HELP)]
    Show(TemplateShowArgs),
    /// Run one template with its variables checked and bound
    #[command(after_help = TEMPLATE_RUN_AFTER_HELP)]
    Run(TemplateRunArgs),
}

/// `template list`.
#[derive(Debug, Args)]
pub struct TemplateListArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// `template show`.
#[derive(Debug, Args)]
pub struct TemplateShowArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,

    /// Template name, as `template list` shows it
    #[arg(value_name = "NAME")]
    pub name: String,
}

/// `template run`.
#[derive(Debug, Args)]
pub struct TemplateRunArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,

    /// Output format
    #[arg(long, short, value_enum, default_value_t = RowFormat::Json)]
    pub format: RowFormat,

    /// Set a template variable; repeatable
    #[arg(long = "var", value_name = "KEY=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,

    /// Template name, as `template list` shows it
    #[arg(value_name = "NAME")]
    pub name: String,
}

/// `capture`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["event", "batch"]))]
pub struct CaptureArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,

    /// Event name (one event); use --batch for JSONL on stdin instead
    #[arg(value_name = "EVENT")]
    pub event: Option<String>,

    /// Who did it (required with EVENT)
    #[arg(long, value_name = "ID", required_unless_present = "batch")]
    pub distinct_id: Option<String>,

    /// An event property; VALUE is read as JSON when it parses (42, true, {"a":1}), else as
    /// text; repeatable
    #[arg(long = "property", short = 'p', value_name = "KEY=VALUE", value_parser = parse_var)]
    pub properties: Vec<(String, String)>,

    /// When it happened (RFC 3339); PostHog uses the time of receipt when absent
    #[arg(long, value_name = "TIME")]
    pub timestamp: Option<String>,

    /// Idempotency key; default: derived from the event when --timestamp is given, else random
    #[arg(long, value_name = "UUID")]
    pub uuid: Option<String>,

    /// Read events from stdin, one JSON object per line:
    /// {"event","distinct_id","properties"?,"timestamp"?,"uuid"?}
    #[arg(long, conflicts_with_all = ["event", "distinct_id", "properties", "timestamp", "uuid"])]
    pub batch: bool,
}

/// `flags …`.
#[derive(Debug, Subcommand)]
pub enum FlagsCommand {
    /// Evaluate one flag for one person
    #[command(after_help = FLAGS_EVALUATE_AFTER_HELP)]
    Evaluate(FlagsEvaluateArgs),
    /// List the project's feature flags
    #[command(after_help = FLAGS_LIST_AFTER_HELP)]
    List(ListArgs),
}

/// `flags evaluate`.
#[derive(Debug, Args)]
pub struct FlagsEvaluateArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,

    /// The flag key
    #[arg(value_name = "KEY")]
    pub key: String,

    /// The person to evaluate for
    #[arg(long, value_name = "ID")]
    pub distinct_id: String,

    /// A person property to evaluate with (overrides the stored one); repeatable
    #[arg(long = "person-property", value_name = "KEY=VALUE", value_parser = parse_var)]
    pub person_properties: Vec<(String, String)>,

    /// A group membership, group type → key; repeatable
    #[arg(long = "group", value_name = "TYPE=KEY", value_parser = parse_var)]
    pub groups: Vec<(String, String)>,
}

/// A listing command with only connection options.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// `cohorts …`.
#[derive(Debug, Subcommand)]
pub enum CohortsCommand {
    /// List the project's cohorts
    #[command(after_help = COHORTS_LIST_AFTER_HELP)]
    List(ListArgs),
    /// Create a cohort from PostHog cohort filters
    #[command(after_help = COHORTS_CREATE_AFTER_HELP)]
    Create(CohortsCreateArgs),
    /// List the persons in a cohort
    #[command(after_help = COHORTS_PERSONS_AFTER_HELP)]
    Persons(CohortsPersonsArgs),
}

/// `cohorts create`.
#[derive(Debug, Args)]
pub struct CohortsCreateArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,

    /// The cohort's name
    #[arg(value_name = "NAME")]
    pub name: String,

    /// Filters as JSON, e.g. '{"properties":{"type":"AND","values":[{"key":"plan",
    /// "value":"pro","type":"person","operator":"exact"}]}}'
    #[arg(long, value_name = "JSON")]
    pub filters: String,

    /// A description
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
}

/// `cohorts persons`.
#[derive(Debug, Args)]
pub struct CohortsPersonsArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,

    /// The cohort's numeric id (`cohorts list` shows it)
    #[arg(value_name = "ID")]
    pub id: u64,

    /// Most persons to print
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
}

/// `mcp`.
#[derive(Debug, Args)]
pub struct McpArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// `KEY=VALUE`, split at the first `=`; the key must not be empty.
fn parse_var(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// `run` / `extract`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Config file (YAML or JSON, nested or flat shape)
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,

    /// Where the tables land: a directory, or an object-store URL (s3://bucket/prefix,
    /// gs://bucket/prefix, az://container/prefix, file:///path); credentials come from the
    /// environment (AWS_*, GOOGLE_*, AZURE_*) [default: the config's output.location, else
    /// posthog-output]
    #[arg(long, value_name = "DIR|URL")]
    pub output_dir: Option<String>,

    /// State store, a file or an object URL [default: DIR/state.json]
    #[arg(long, value_name = "FILE|URL")]
    pub state_file: Option<String>,

    /// Part file format, overriding the config's output.format
    #[arg(long, value_name = "FORMAT", value_parser = output_format_parser())]
    pub format: Option<OutputFormat>,

    /// After the run, successful or not, write its metrics (rows, requests, retries, 429s,
    /// breaker trips, duration, watermark, consecutive failures) to this file in Prometheus
    /// text format, for node_exporter's textfile collector (name it *.prom)
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,

    /// Send every request the run would send and read every page, then discard it: no part
    /// file written, no state committed. The summary says status "dry_run", with the rows a
    /// run would read, deduplicate and output. Shows what a run would read and how fast
    /// PostHog serves it
    #[arg(long, conflicts_with = "metrics_file")]
    pub dry_run: bool,

    /// Re-extract the committed parts whose files are missing, instead of extracting: each
    /// part's recorded range of the incremental field is read again, rows that the remaining
    /// parts hold are skipped, and the new parts replace the lost ones in the state (exactly
    /// once). The watermark does not move; the next run continues as before. The summary says
    /// status "repaired" and lists the parts in "repaired"
    #[arg(long, conflicts_with = "dry_run")]
    pub repair: bool,
}

/// The output location when neither `--output-dir` nor `output.location` gives one.
pub const DEFAULT_OUTPUT_DIR: &str = "posthog-output";

impl RunArgs {
    /// Where the tables land: `--output-dir`, else the config's `output.location`, else
    /// [`DEFAULT_OUTPUT_DIR`].
    pub fn output_location(
        &self,
        configured: Option<&Location>,
    ) -> Result<Location, posthog_osiris::ConfigError> {
        match (&self.output_dir, configured) {
            (Some(text), _) => Location::parse(text)
                .map_err(|e| posthog_osiris::ConfigError::new("--output-dir", e.to_string())),
            (None, Some(location)) => Ok(location.clone()),
            (None, None) => Ok(Location::Local(PathBuf::from(DEFAULT_OUTPUT_DIR))),
        }
    }

    /// The state store's location: `--state-file`, else `state.json` in the output location.
    pub fn state_location(
        &self,
        output: &Location,
    ) -> Result<Location, posthog_osiris::ConfigError> {
        match &self.state_file {
            Some(text) => Location::parse(text)
                .map_err(|e| posthog_osiris::ConfigError::new("--state-file", e.to_string())),
            None => Ok(output.join("state.json")),
        }
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
        let output = args.output_location(None).unwrap();
        assert_eq!(output, Location::Local(PathBuf::from("posthog-output")));
        assert_eq!(
            args.state_location(&output).unwrap(),
            Location::Local(PathBuf::from("posthog-output/state.json"))
        );
        let configured = Location::parse("s3://bucket/landing").unwrap();
        let output = args.output_location(Some(&configured)).unwrap();
        assert_eq!(output, configured, "the config's output.location");
        assert_eq!(
            args.state_location(&output).unwrap().to_string(),
            "s3://bucket/landing/state.json"
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
        let output = args.output_location(None).unwrap();
        assert_eq!(
            output,
            Location::Local(PathBuf::from("out")),
            "the flag wins"
        );
        assert_eq!(
            args.state_location(&output).unwrap(),
            Location::Local(PathBuf::from("s.json"))
        );
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
        assert_eq!(cli.command.config_path(), Some(Path::new("x")));
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
            &["query"],
            &["query", "--project-id", "1", "--config", "c", "select 1"],
            &["capture", "e"],
            &["capture", "--batch", "--distinct-id", "d"],
            &["template", "run"],
            &["flags", "evaluate", "k"],
            &["cohorts", "persons", "abc"],
            &["query", "--var", "novalue", "select 1"],
            &["run", "--config", "c", "--api-key", "phx_x"],
            &[],
        ] {
            let err = parse(args).expect_err("rejected");
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
    }

    #[test]
    fn every_command_takes_config_and_the_agent_commands_the_connection_flags() {
        let mut root = Cli::command();
        root.build();
        let mut leaves = Vec::new();
        for sub in root.get_subcommands().filter(|s| s.get_name() != "help") {
            if sub.has_subcommands() {
                let parent = sub.get_name();
                leaves.extend(
                    sub.get_subcommands()
                        .filter(|s| s.get_name() != "help")
                        .map(|s| (format!("{parent} {}", s.get_name()), s)),
                );
            } else {
                leaves.push((sub.get_name().to_owned(), sub));
            }
        }
        assert_eq!(leaves.len(), 18);
        for (name, leaf) in leaves {
            let has = |id: &str| leaf.get_arguments().any(|a| a.get_id() == id);
            assert!(has("config"), "{name} has no --config");
            let needs_config = matches!(name.as_str(), "run" | "discover" | "doctor");
            let tooling = matches!(name.as_str(), "completions" | "man");
            assert_eq!(
                has("host") && has("project_id"),
                !needs_config && !tooling,
                "{name}: --host and --project-id belong to the agent commands"
            );
        }
        for args in [
            &["template", "list", "--config", "c.yaml"][..],
            &["template", "show", "churn_risk", "-c", "c.yaml"],
            &["objects", "--project-id", "1", "--host", "eu"],
            &["completions", "bash", "--config", "c.yaml"],
            &["man", "-c", "c.yaml"],
        ] {
            let cli = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert!(cli.command.is_offline(), "{args:?}");
        }
        let cli = parse(&["template", "list", "-c", "c.yaml"]).expect("parses");
        assert_eq!(cli.command.config_path(), Some(Path::new("c.yaml")));
        let cli = parse(&["query", "select 1"]).expect("parses");
        assert!(!cli.command.is_offline());
        assert_eq!(cli.command.config_path(), None);
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
            if sub.has_subcommands() {
                for leaf in sub.get_subcommands_mut().filter(|s| s.get_name() != "help") {
                    helps.push(leaf.render_long_help().to_string());
                }
            } else {
                helps.push(sub.render_long_help().to_string());
            }
        }
        // The top level; run, discover, doctor, query, objects, fields; template list, show,
        // run; capture; flags evaluate, list; cohorts list, create, persons; mcp;
        // completions, man.
        assert_eq!(helps.len(), 19);
        for help in helps {
            assert!(help.contains("Example"), "{help}");
            assert!(help.contains("Exit codes:"), "{help}");
            assert!(help.contains("3  authentication or permission error"));
            // Commands that talk to PostHog say where the key comes from and how they fail.
            let offline = help.contains("completion script") || help.contains("man page");
            if !offline {
                assert!(help.contains("POSTHOG_PERSONAL_API_KEY"), "{help}");
                assert!(help.contains("\"status\":\"error\""), "{help}");
            }
        }
    }
}
