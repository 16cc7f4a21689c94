//! `posthog-cli`: the PostHog toolkit's command line.
//!
//! - `run` (alias `extract`) extracts the configured table incrementally and exactly once into
//!   `DIR/<table_name>/part-*.{parquet,jsonl,csv}` and commits its state to `DIR/state.json`;
//! - `discover` lists the resources with their schemas and a stable fingerprint;
//! - `doctor` checks authentication, project access and query permission;
//! - `query`, `objects`, `fields`, `template`, `capture`, `flags`, `cohorts` serve agents and
//!   scripts (JSON by default), and `mcp` serves the same to an agent over the Model Context
//!   Protocol on stdio.
//!
//! Every command prints exactly one JSON object on stdout (on failure
//! `{"status":"error","category":…,"message":…}`, plus `error: <category>: <message>` on
//! stderr; a command line that does not parse too, with clap's message on stderr); logs and the
//! progress bar go to stderr. Exit codes: 0 ok, 1 runtime failure, 2 usage or config error,
//! 3 authentication or permission error.
//!
//! The binary holds no business logic: it parses arguments, resolves the API key (config, else
//! `--api-key-file`, else `POSTHOG_PERSONAL_API_KEY`; never a plain argument), sets up logs and
//! the progress bar, calls the `posthog-osiris` driver, prints its result and maps failures to
//! exit codes. It is the only part of the toolkit that reads the environment.

mod agent;
mod cli;
mod connect;
mod key;
mod logging;
mod mcp;
mod metrics;
mod output;
mod progress;
mod rows;
mod storage;

use std::io::{self, IsTerminal as _};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use indicatif::ProgressBar;
use posthog_osiris::{Context, Driver as _, DriverError, ExtractConfig, PostHogDriver};
use posthog_storage::{Bucket, Location};

use crate::cli::{
    Cli, CohortsCommand, Command, DiscoverArgs, DoctorArgs, FlagsCommand, RunArgs, TemplateCommand,
};
use crate::connect::ConnectionFlags;
use crate::output::{Failure, print_json_line};
use crate::progress::BarObserver;

fn main() -> ExitCode {
    bound_allocator_growth();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(refusal) => return refused(&refusal),
    };
    let code = match execute(&cli) {
        Ok(code) => code,
        Err(failure) => {
            // A run that failed before it reached the extraction (bad config, key file, state
            // store) still counts in its metrics file.
            if let Command::Run(RunArgs {
                metrics_file: Some(path),
                ..
            }) = &cli.command
                && !metrics::written()
                && let Err(e) = metrics::write_early_failure(path)
            {
                tracing::error!(path = %path.display(), error = %e, "cannot write the metrics file");
            }
            failure.report();
            failure.exit_code
        }
    };
    ExitCode::from(code)
}

/// What clap refused: `--help` and `--version` print as clap prints them and exit 0; a usage
/// error prints clap's message on stderr and, like every other failure, the error object on
/// stdout, and exits 2.
fn refused(refusal: &clap::Error) -> ExitCode {
    // Nothing more can be said if stderr or stdout is gone; the exit code still tells.
    let _ = refusal.print();
    if !refusal.use_stderr() {
        return ExitCode::SUCCESS;
    }
    let message = match refusal.kind() {
        // clap printed the help instead of an error line.
        clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            "a command is missing; the help on stderr lists them".to_owned()
        }
        // clap's first paragraph: the error, and what it concerns (`the following required
        // arguments were not provided:` is followed by their names).
        _ => {
            let text = refusal.render().to_string();
            let paragraph: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|line| !line.is_empty())
                .collect();
            let joined = paragraph.join(" ");
            joined.strip_prefix("error: ").unwrap_or(&joined).to_owned()
        }
    };
    let failure = Failure::usage(&message);
    let _ = print_json_line(&failure.to_json());
    ExitCode::from(failure.exit_code)
}

/// Keeps peak memory flat over long runs. Each page body is one allocation of several MB; glibc
/// raises its mmap threshold to the size of every large block freed, after which such blocks
/// come from the heap, whose fragmentation grows with the number of pages (`cargo xtask bench
/// run`: peak RSS 74.6 → 82.8 MiB from 1 M to 3 M events). A fixed threshold keeps large blocks
/// in their own mappings, returned to the system when freed (68.3 → 68.4 MiB).
fn bound_allocator_growth() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes glibc malloc's tuning; it is called before any thread
        // exists, and an unsupported parameter is reported by its return value (ignored: the
        // default behaviour is still correct, only less frugal).
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        }
    }
}

/// Runs the command; `Ok` carries the exit code of a command that printed its own result.
fn execute(cli: &Cli) -> Result<u8, Failure> {
    if cli.command.is_offline() {
        // A config named on the command line is never ignored silently: a broken one is
        // reported here, where it is first named, rather than by the next command.
        if let Some(path) = cli.command.config_path() {
            ExtractConfig::from_path(path)?;
        }
        return offline(&cli.command).map(|()| 0);
    }
    let mut config = match (cli.command.connection(), cli.command.config_path()) {
        (Some(conn), _) => connect::agent_config(
            ConnectionFlags {
                config: conn.config.as_deref(),
                host: conn.host.as_deref(),
                project_id: conn.project_id.as_deref(),
                api_key_file: cli.global.api_key_file.as_deref(),
            },
            |name| std::env::var_os(name),
        )?,
        (None, Some(path)) => ExtractConfig::from_path(path)?,
        (None, None) => {
            return Err(Failure::internal(&anyhow::anyhow!(
                "the command has no connection options"
            )));
        }
    };

    let stderr_is_terminal = io::stderr().is_terminal();
    let show_progress =
        matches!(cli.command, Command::Run(_)) && stderr_is_terminal && !cli.global.quiet;
    let bar = progress::bar(show_progress);
    logging::init(
        cli.global.log_format,
        cli.global.log_level.unwrap_or(config.logging.level),
        config.logging.verbose_http,
        bar.clone(),
        stderr_is_terminal,
    )
    .map_err(|e| Failure::internal(&e))?;

    config.connection = key::resolve(
        config.connection,
        cli.global.api_key_file.as_deref(),
        std::env::var_os(key::KEY_ENV),
    )?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(|e| Failure::internal(&e))?;

    let result = match &cli.command {
        Command::Run(args) => run(&runtime, config, args, bar.clone(), show_progress),
        Command::Discover(args) => discover(&runtime, &config, args),
        Command::Doctor(args) => doctor(&runtime, &config, args),
        command => runtime.block_on(agent_command(cli, command, &config)),
    };
    bar.finish_and_clear();
    result
}

/// The commands that need neither a connection nor logs.
fn offline(command: &Command) -> Result<(), Failure> {
    match command {
        Command::Objects(_) => agent::objects(),
        Command::Template(TemplateCommand::List(_)) => agent::template_list(),
        Command::Template(TemplateCommand::Show(args)) => agent::template_show(&args.name),
        Command::Completions(args) => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut out = io::stdout().lock();
            clap_complete::generate(args.shell, &mut command, "posthog-cli", &mut out);
            Ok(())
        }
        Command::Man(_) => {
            let command = <Cli as clap::CommandFactory>::command();
            let mut out = io::stdout().lock();
            clap_mangen::Man::new(command)
                .render(&mut out)
                .map_err(|e| Failure::internal(&anyhow::anyhow!("cannot write the man page: {e}")))
        }
        _ => Err(Failure::internal(&anyhow::anyhow!(
            "the command needs a connection"
        ))),
    }
}

/// The agent and API commands, with a client built from the resolved config.
async fn agent_command(
    cli: &Cli,
    command: &Command,
    config: &ExtractConfig,
) -> Result<u8, Failure> {
    let needs_project_key = matches!(
        command,
        Command::Capture(_) | Command::Flags(FlagsCommand::Evaluate(_))
    );
    let client = if needs_project_key {
        let key = connect::project_key(
            cli.global.project_api_key_file.as_deref(),
            std::env::var_os(connect::PROJECT_KEY_ENV),
        )?;
        let key = match key {
            Some(key) => key,
            None => project_token(config).await?,
        };
        posthog_osiris::connect(config, Some(&key))?
    } else {
        posthog_osiris::connect(config, None)?
    };
    match command {
        Command::Query(args) => agent::query(&client, args).await,
        Command::Fields(args) => agent::fields(&client, args).await,
        Command::Template(TemplateCommand::Run(args)) => agent::template_run(&client, args).await,
        Command::Capture(args) => agent::capture(&client, args).await,
        Command::Flags(FlagsCommand::Evaluate(args)) => agent::flags_evaluate(&client, args).await,
        Command::Flags(FlagsCommand::List(_)) => agent::flags_list(&client).await,
        Command::Cohorts(CohortsCommand::List(_)) => agent::cohorts_list(&client).await,
        Command::Cohorts(CohortsCommand::Create(args)) => {
            agent::cohorts_create(&client, args).await
        }
        Command::Cohorts(CohortsCommand::Persons(args)) => {
            agent::cohorts_persons(&client, args).await
        }
        Command::Mcp(_) => mcp::serve(client).await,
        _ => Err(Failure::internal(&anyhow::anyhow!("not an agent command"))),
    }
    .map(|()| 0)
}

/// The project API key (`api_token`) read from the project with the personal key, for
/// capture and flags when neither `--project-api-key-file` nor the environment gives one.
async fn project_token(config: &ExtractConfig) -> Result<secrecy::SecretString, Failure> {
    let client = posthog_osiris::connect(config, None)?;
    let project = client.project().await.map_err(agent::client_failure)?;
    match project.api_token() {
        Some(token) => Ok(secrecy::SecretString::from(token.to_owned())),
        None => Err(Failure::from(posthog_osiris::ConfigError::new(
            "--project-api-key-file",
            format!(
                "the project does not report its api_token; pass --project-api-key-file PATH \
                 or set {}",
                connect::PROJECT_KEY_ENV
            ),
        ))),
    }
}

/// `run`: opens the state store, extracts, prints the run summary.
fn run(
    runtime: &tokio::runtime::Runtime,
    mut config: ExtractConfig,
    args: &RunArgs,
    bar: ProgressBar,
    show_progress: bool,
) -> Result<u8, Failure> {
    if let Some(format) = args.format {
        config.output.format = format;
    }
    let summary = extract(runtime, &config, args, bar, show_progress);
    if let Some(path) = &args.metrics_file {
        let figures = summary.as_ref().ok().map(metrics::RunFigures::from);
        // The run's outcome stands either way: its parts and state are committed (or not)
        // already. An unwritable metrics file shows as a stale run in monitoring.
        if let Err(e) = metrics::write(path, &config.destination.table_name, figures.as_ref()) {
            tracing::error!(path = %path.display(), error = %e, "cannot write the metrics file");
        }
    }
    let summary = summary?;
    print(&serde_json::to_string(&summary))?;
    Ok(0)
}

/// Opens the state store (held until the run is over, whatever its outcome) and extracts.
fn extract(
    runtime: &tokio::runtime::Runtime,
    config: &ExtractConfig,
    args: &RunArgs,
    bar: ProgressBar,
    show_progress: bool,
) -> Result<posthog_osiris::RunSummary, Failure> {
    let output = args.output_location(config.output.location.as_ref())?;
    let state_location = args.state_location(&output)?;
    let options = storage::options(config);
    let mut store = storage::open_state(&state_location, &options)?;
    // The metrics file is written after the run whatever its outcome; a place it cannot be
    // written is found now, before the first request, not after the run's work is done.
    if let Some(path) = &args.metrics_file {
        metrics::check_writable(path).map_err(|source| DriverError::Io {
            action: "write the metrics file",
            path: path.display().to_string(),
            source,
        })?;
    }
    tracing::info!(
        table = %config.destination.table_name,
        output = %output,
        state = %state_location,
        format = %config.output.format,
        "starting run"
    );
    let mut ctx = match &output {
        Location::Local(dir) => Context::new(dir),
        Location::Object(url) => Context::new(".")
            .with_bucket(Bucket::connect(url, &options).map_err(DriverError::from)?),
    }
    .with_dry_run(args.dry_run)
    .with_repair(args.repair);
    if show_progress {
        ctx = ctx.with_observer(Arc::new(BarObserver::new(bar.clone())));
    }
    let summary = runtime.block_on(PostHogDriver.run(config, store.as_mut(), &ctx));
    bar.finish_and_clear();
    Ok(summary?)
}

/// `discover`: prints the resources and their fingerprint.
fn discover(
    runtime: &tokio::runtime::Runtime,
    config: &ExtractConfig,
    _args: &DiscoverArgs,
) -> Result<u8, Failure> {
    // discover writes nothing; the base path is never used.
    let ctx = Context::new(".");
    let discovery = runtime.block_on(PostHogDriver.discover(config, &ctx))?;
    print(&serde_json::to_string(&discovery))?;
    Ok(0)
}

/// `doctor`: prints the report when healthy (exit 0); a report that is not is a failure like
/// any other, printed as one (exit 1).
fn doctor(
    runtime: &tokio::runtime::Runtime,
    config: &ExtractConfig,
    args: &DoctorArgs,
) -> Result<u8, Failure> {
    let ctx = Context::new(".").with_doctor_timeout(Duration::from_millis(args.timeout_ms));
    let report = runtime.block_on(PostHogDriver.doctor(config, &ctx));
    if let Some(failure) = Failure::from_doctor(&report) {
        return Err(failure);
    }
    print(&serde_json::to_string(&report))?;
    Ok(0)
}

/// Prints a serialized result as the one JSON line on stdout.
fn print(json: &Result<String, serde_json::Error>) -> Result<(), Failure> {
    let json = json
        .as_ref()
        .map_err(|e| Failure::internal(&anyhow::anyhow!("cannot serialize the result: {e}")))?;
    print_json_line(json)
        .context("cannot write to stdout")
        .map_err(|e| Failure::internal(&e))
}
