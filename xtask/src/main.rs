//! `cargo xtask`: the project's developer tasks, in Rust so they run wherever cargo does.
//!
//! - `cargo xtask demo`: starts the mock PostHog on loopback and drives it through
//!   `posthog-client`: a HogQL keyset scan of every event, a retried request, REST listings.
//! - `cargo xtask bench core`: the core pipeline benchmark (release build).

mod bench;
mod demo;

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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Demo(args) => runtime.block_on(demo::run(args)),
        Command::Bench(args) => bench::run(args),
    }
}
