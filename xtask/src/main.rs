//! `cargo xtask`: the project's developer tasks, in Rust so they run wherever cargo does.
//!
//! - `cargo xtask demo`: starts the mock PostHog on loopback and runs `posthog-cli run`
//!   against it twice: a full extraction, then an incremental one after new and late events.
//! - `cargo xtask bench core|run|rate|sweep|backfill`: the core pipeline, a whole run, the
//!   request budget and concurrent slices, measured on release builds (`docs/benchmarks.md`).
//! - `cargo xtask e2e`: the black-box end-to-end suite over the release `posthog-cli` and
//!   `posthog-mock` binaries.
//! - `cargo xtask tidy`: checks what `docs/ARCHITECTURE.md` claims about the code (also a
//!   `#[test]`, so `cargo test --workspace` runs it).

mod bench;
mod demo;
pub(crate) mod e2e;
mod tidy;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Developer tasks for the PostHog toolkit"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the main job against the built-in mock PostHog (no credentials needed).
    Demo(demo::DemoArgs),
    /// Benchmarks (release builds); see docs/benchmarks.md.
    Bench(bench::BenchArgs),
    /// End-to-end suite: drives the release posthog-cli against posthog-mock processes.
    E2e(e2e::E2eArgs),
    /// Checks the crate graph, module docs, dependencies and function lengths against
    /// docs/ARCHITECTURE.md (also run by `cargo test`).
    Tidy,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Demo(args) => runtime.block_on(demo::run(args)),
        Command::Bench(args) => bench::run(args),
        Command::E2e(args) => e2e::run(args),
        Command::Tidy => tidy::run(),
    }
}

/// The workspace root (the parent of `xtask/`).
pub(crate) fn workspace_root() -> std::path::PathBuf {
    let xtask = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask).to_path_buf()
}

/// The cargo target directory (`CARGO_TARGET_DIR`, else the workspace's `target/`).
pub(crate) fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), std::path::PathBuf::from)
}

/// Builds the release `posthog-cli` and `posthog-mock` (unless `no_build`) and returns their
/// paths, for the tasks that drive the two binaries (`e2e`, `bench run`, `bench rate`).
pub(crate) fn release_binaries(
    no_build: bool,
) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
    if !no_build {
        cargo_build(&[
            "--release",
            "--locked",
            "-p",
            "posthog-cli",
            "-p",
            "posthog-mock",
        ])?;
    }
    let release = target_dir().join("release");
    Ok((release.join("posthog-cli"), release.join("posthog-mock")))
}

/// Runs `cargo build <args>` in the workspace root (the binaries the tasks drive).
pub(crate) fn cargo_build(args: &[&str]) -> anyhow::Result<()> {
    let status = std::process::Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .arg("build")
        .args(args)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        anyhow::bail!("cargo build {} failed ({status})", args.join(" "));
    }
    Ok(())
}
