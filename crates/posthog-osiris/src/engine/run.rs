//! One `run`, top-down: load the state, plan, claim the table, read pages while the sink
//! writes them, commit, and report.
//!
//! Every decision is in the [`RunPlan`] (computed before anything is touched); the reading
//! half is `fetch.rs`, the writing half `sink.rs`, the table directory `table_dir.rs`.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use posthog_client::Client;
use posthog_core::{LocalDir, PartStore};
use posthog_state::{StateError, StateStore, TableState};
use tokio::sync::mpsc;

use super::fetch::{self, Pipeline};
use super::plan::{RunPlan, StateOrigin};
use super::repair::{self, KeyColumns};
use super::sink::{Sink, SinkOutcome, SinkSetup};
use super::source::{Source, Start};
use super::table_dir::{TableDir, missing_parts};
use crate::driver::{Context, RunStatus, RunSummary, StateSummary};
use crate::{ConfigError, DriverError, ExtractConfig};

/// What an extraction hands back to be reported.
struct Extracted {
    outcome: SinkOutcome,
    state: TableState,
    repaired: Vec<String>,
    page_shrinks: u64,
}

pub(crate) async fn run(
    config: &ExtractConfig,
    store: &mut dyn StateStore,
    ctx: &Context,
) -> Result<RunSummary, DriverError> {
    let started = Instant::now();
    let client = super::build_client(config, ctx)?;
    let run_id = uuid::Uuid::new_v4().to_string();
    let (leased, plan) = lease_and_plan(config, store, ctx, &run_id)?;
    // From here the table is this run's alone, and every place it writes has taken a file
    // before the first request: a run that cannot finish fails before it reads anything.
    let table_dir = match plan.dry_run {
        true => None,
        false => Some(claim(&plan, leased, store, &run_id)?),
    };
    let parts = table_dir.as_ref().map_or_else(
        || match &ctx.bucket {
            Some(bucket) => bucket.parts(&plan.table),
            None => Arc::new(LocalDir::new(&plan.table_path)) as Arc<dyn PartStore>,
        },
        TableDir::parts,
    );
    let plan = check_parts(plan, config, ctx, parts.as_ref()).await;
    let extracted = match plan {
        Ok(plan) => extract(&client, plan, parts, table_dir.as_ref(), store, ctx, run_id).await,
        Err(e) => Err(e),
    };
    if let (Err(_), Some(dir)) = (&extracted, &table_dir) {
        dir.release_if_unused();
    }
    if let Some(dir) = table_dir {
        dir.release();
    }
    let extracted = extracted?;
    let status = match (ctx.dry_run, ctx.repair) {
        (true, _) => RunStatus::DryRun,
        (false, true) => RunStatus::Repaired,
        (false, false) => RunStatus::Success,
    };
    Ok(summary(config, status, extracted, &client, started))
}

/// Leases an object-store table, then loads the state and plans the run. The lease comes
/// before the state is read: the state then holds every commit of the run that held the
/// table before (a file store is locked from open, so its state cannot change under a run).
fn lease_and_plan(
    config: &ExtractConfig,
    store: &mut dyn StateStore,
    ctx: &Context,
    run_id: &str,
) -> Result<(Option<TableDir>, RunPlan), DriverError> {
    let leased = match (&ctx.bucket, ctx.dry_run) {
        (Some(bucket), false) => {
            let table = &config.destination.table_name;
            let dir = TableDir::lease_object(
                bucket,
                table,
                &ctx.base_path.join(table),
                config.output.storage.lease,
                run_id,
            )?;
            if let Err(e) = store.reload() {
                dir.release();
                return Err(e.into());
            }
            Some(dir)
        }
        _ => None,
    };
    let planned = load_state(store, config).and_then(|(base, origin)| {
        RunPlan::new(
            config,
            &ctx.base_path,
            base,
            &origin,
            ctx.dry_run,
            super::now_micros(),
        )
    });
    match planned {
        Ok(plan) => Ok((leased, plan)),
        Err(e) => {
            if let Some(dir) = leased {
                dir.release();
            }
            Err(e)
        }
    }
}

/// Before the first request: a repair is planned from the parts that remain; any other run
/// stops if a committed part is missing.
async fn check_parts(
    plan: RunPlan,
    config: &ExtractConfig,
    ctx: &Context,
    parts: &dyn PartStore,
) -> Result<RunPlan, DriverError> {
    match (ctx.repair, &ctx.bucket) {
        (true, Some(_)) => Err(DriverError::Config(ConfigError::new(
            "--repair",
            "reads the table's remaining parts back from a local directory; a table on an \
             object store cannot be repaired yet: copy it to a local directory, repair it \
             there, and copy the new parts and state back",
        ))),
        (true, None) => plan_repair(plan, config, parts).await,
        (false, _) => refuse_missing_parts(plan, parts),
    }
}

/// Takes the table for this run (a local directory's lock, or prepares the object store's
/// table already leased), removes what an interrupted run left, and rewrites the manifest
/// from the committed state (an interrupted run may have committed without rewriting it).
fn claim(
    plan: &RunPlan,
    leased: Option<TableDir>,
    store: &mut dyn StateStore,
    run_id: &str,
) -> Result<TableDir, DriverError> {
    let dir = match leased {
        None => TableDir::claim(&plan.table_path, store, &plan.base, run_id)?,
        Some(leased) => leased.prepare_object(store, &plan.base)?,
    };
    if !plan.base.parts.is_empty()
        && let Err(e) = dir.write_manifest(&plan.table, &plan.base)
    {
        dir.release();
        return Err(e);
    }
    Ok(dir)
}

/// Reads the plan's pages into the sink and commits what it wrote: the checkpoints as they
/// come, then the final state, then (snapshots) the removal of the parts it replaced.
async fn extract(
    client: &Client,
    mut plan: RunPlan,
    parts: Arc<dyn PartStore>,
    table_dir: Option<&TableDir>,
    store: &mut dyn StateStore,
    ctx: &Context,
    run_id: String,
) -> Result<Extracted, DriverError> {
    tracing::info!(
        table = %plan.table, run_id = %run_id, incremental = plan.incremental,
        start = %plan.start, repair = !plan.repaired.is_empty(), "extraction starting"
    );
    let slices = std::mem::take(&mut plan.slices);
    let sink = Sink::new(SinkSetup {
        table: plan.table.clone(),
        parts,
        plan: plan.sink,
        slices: match slices.is_empty() {
            true => vec![(Start::Beginning, None)], // a REST list
            false => slices.iter().map(|s| (s.lower.clone(), s.before)).collect(),
        },
        base: plan.base.clone(),
        incremental: plan.incremental,
        watermark: plan.watermark,
        run_id: run_id.clone(),
        observer: ctx.observer.clone(),
        span: plan.span,
        dry_run: plan.dry_run,
        // The run id's first 8 hex digits.
        part_token: ctx.bucket.as_ref().map(|_| {
            run_id
                .chars()
                .filter(char::is_ascii_hexdigit)
                .take(8)
                .collect()
        }),
    })?;
    let (pages_tx, pages_rx) = mpsc::channel(fetch::SINK_CHANNEL);
    let (checkpoints_tx, checkpoints_rx) = mpsc::unbounded_channel();
    let sink_task = tokio::task::spawn_blocking(move || sink.run(pages_rx, checkpoints_tx));
    let mut pipeline = Pipeline::new(pages_tx, checkpoints_rx, store, &plan.table, table_dir);
    let fetched = match &plan.source {
        Source::Keyset(_) => {
            fetch::keyset(client, slices, plan.split.as_ref(), &mut pipeline).await
        }
        Source::Rest(resource) => {
            fetch::rest(client, *resource, plan.page_size, &mut pipeline).await
        }
    };
    let (outcome, page_shrinks) = pipeline.finish(fetched, sink_task).await?;
    // A dry run wrote nothing: nothing to commit, and it reports the state it started from.
    let state = match table_dir {
        None => plan.base,
        Some(dir) => {
            dir.commit(store, &plan.table, &outcome.state)?;
            if !plan.incremental {
                dir.remove_replaced(&plan.base, &outcome.state)?;
            }
            outcome.state.clone()
        }
    };
    Ok(Extracted {
        outcome,
        state,
        repaired: plan.repaired,
        page_shrinks,
    })
}

/// The summary of a finished run, logged and returned.
fn summary(
    config: &ExtractConfig,
    status: RunStatus,
    extracted: Extracted,
    client: &Client,
    started: Instant,
) -> RunSummary {
    let Extracted {
        outcome,
        state,
        repaired,
        page_shrinks,
    } = extracted;
    let client_stats = client.stats();
    let table = config.destination.table_name.clone();
    tracing::info!(
        table = %table, %status, rows_read = outcome.rows_read,
        rows_deduplicated = outcome.rows_deduplicated, rows_output = outcome.rows_output,
        slices = outcome.slices, parts = outcome.files.len(), requests = client_stats.requests,
        repaired = repaired.len(), "extraction finished"
    );
    RunSummary {
        status,
        table,
        rows_read: outcome.rows_read,
        rows_deduplicated: outcome.rows_deduplicated,
        rows_output: outcome.rows_output,
        slices: outcome.slices as u64,
        files: outcome
            .files
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        repaired,
        requests: client_stats.requests,
        // Requests sent again: by the client (after its waits), or at half the page after a
        // server timeout.
        retries: client_stats.retries + page_shrinks,
        throttled: client_stats.throttled,
        page_shrinks,
        breaker_trips: client_stats.breaker_trips,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        state: StateSummary::from(&state),
    }
}

/// Committed parts whose files are gone stop an incremental run before any request: their
/// rows would never be read again. A snapshot replaces every part anyway.
fn refuse_missing_parts(plan: RunPlan, parts: &dyn PartStore) -> Result<RunPlan, DriverError> {
    let missing = missing_parts(parts, &plan.base)?;
    if !plan.incremental {
        for part in &missing {
            tracing::warn!(file = %part.file, "a part of the previous snapshot is missing; this run replaces the snapshot");
        }
        return Ok(plan);
    }
    match missing.is_empty() {
        true => Ok(plan),
        false => Err(DriverError::MissingParts {
            table: plan.table,
            dir: plan.table_path,
            parts: missing,
        }),
    }
}

/// Plans `--repair`, before the first request: the lost parts' ranges, and the ids the
/// remaining parts hold in them (read back from their files). Only incremental tables are
/// repaired; a snapshot is replaced whole by every run.
async fn plan_repair(
    plan: RunPlan,
    config: &ExtractConfig,
    parts: &dyn PartStore,
) -> Result<RunPlan, DriverError> {
    let Some(scan) = plan.keyset().filter(|_| plan.incremental) else {
        return Err(DriverError::Config(ConfigError::new(
            "--repair",
            format!(
                "re-extracts lost parts of incremental tables; {} is extracted as a snapshot, \
                 which every run replaces whole: run without --repair",
                config.source.data_type
            ),
        )));
    };
    let keys = KeyColumns {
        id: scan.id_column,
        time: scan.time_column.unwrap_or("timestamp"),
    };
    let missing = missing_parts(parts, &plan.base)?;
    let (table, dir, state) = (
        plan.table.clone(),
        plan.table_path.clone(),
        plan.base.clone(),
    );
    let repair =
        tokio::task::spawn_blocking(move || repair::plan(&table, &dir, &state, &missing, keys))
            .await
            .map_err(|e| DriverError::Protocol(format!("the repair planner failed: {e}")))??;
    tracing::info!(
        lost = ?repair.lost(), ranges = repair.ranges.len(),
        excluded = repair.repair.exclude.len(), "repairing lost parts"
    );
    Ok(plan.repair(repair))
}

/// The table's state from the store, or seeded from the config's `inputs.state`.
fn load_state(
    store: &dyn StateStore,
    config: &ExtractConfig,
) -> Result<(TableState, StateOrigin), DriverError> {
    let table = config.destination.table_name.as_str();
    if let Some(state) = store.load(table)? {
        return Ok((
            state,
            StateOrigin::Stored(store.location().map(Path::to_path_buf)),
        ));
    }
    let state = match config.inputs_state.get(table) {
        None | Some(serde_json::Value::Null) => TableState::default(),
        Some(value) => seeded_state(value, table)?,
    };
    Ok((state, StateOrigin::Seeded))
}

/// A state seeded from the config's `inputs.state.<table>`, checked; errors name its path
/// in the config.
fn seeded_state(value: &serde_json::Value, table: &str) -> Result<TableState, DriverError> {
    let state: TableState = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        match path.as_str() {
            "" | "." => ConfigError::new(
                format!("inputs.state.{table}"),
                format!("is not a table state: {}", e.inner()),
            ),
            field => ConfigError::new(
                format!("inputs.state.{table}.{field}"),
                e.inner().to_string(),
            ),
        }
    })?;
    state.validate(table).map_err(|e| match e {
        StateError::InvalidState { reason, .. } => {
            DriverError::Config(ConfigError::new(format!("inputs.state.{table}"), reason))
        }
        other => DriverError::State(other),
    })?;
    Ok(state)
}
