//! The progress bar of `run`: an [`Observer`] drawing on stderr.
//!
//! A spinner while the share of the work done is unknown (snapshots, the first page), a bar
//! once the driver reports a fraction. Drawn only when stderr is a terminal and `--quiet` is
//! not given; otherwise the bar is hidden and nothing observes the run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use posthog_osiris::{Observer, Progress};

/// Steps of the determinate bar (per mille).
const STEPS: u64 = 1000;

/// A bar drawn on stderr, or a hidden one when `visible` is false.
pub fn bar(visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(spinner_style());
    bar.set_message("starting");
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix} [{bar:20}] {percent:>3}% {wide_msg}")
        .map(|style| style.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// Moves the bar as the driver reports progress.
pub struct BarObserver {
    bar: ProgressBar,
    determinate: AtomicBool,
}

impl BarObserver {
    /// An observer drawing on `bar`.
    pub fn new(bar: ProgressBar) -> Self {
        BarObserver {
            bar,
            determinate: AtomicBool::new(false),
        }
    }
}

impl Observer for BarObserver {
    fn progress(&self, progress: &Progress) {
        self.bar.set_prefix(progress.table.clone());
        if let Some(fraction) = progress.fraction {
            if !self.determinate.swap(true, Ordering::Relaxed) {
                self.bar.set_style(bar_style());
                self.bar.set_length(STEPS);
            }
            self.bar.set_position(steps(fraction));
        }
        self.bar.set_message(message(progress));
    }
}

/// `fraction` (0.0..=1.0) in bar steps; out-of-range and NaN values are clamped.
fn steps(fraction: f64) -> u64 {
    let clamped = if fraction.is_nan() {
        0.0
    } else {
        fraction.clamp(0.0, 1.0)
    };
    // Within 0..=STEPS after the clamp: the cast cannot truncate.
    (clamped * STEPS as f64).round() as u64
}

/// `1200 rows out, 1500 read, 300 dup, 850 rows/s, eta 4s` (short: it shares a terminal line).
fn message(progress: &Progress) -> String {
    let mut text = format!(
        "{} out, {} read, {} dup, {:.0} rows/s",
        crate::output::count(progress.rows_output, "row", "rows"),
        progress.rows_read,
        progress.rows_deduplicated,
        progress.rows_per_second.max(0.0),
    );
    if let Some(eta) = progress
        .eta_seconds
        .filter(|eta| eta.is_finite() && *eta >= 0.0)
    {
        text.push_str(&format!(", eta {}", human_duration(eta)));
    }
    text
}

/// `42s`, `3m05s`, `2h07m`.
fn human_duration(seconds: f64) -> String {
    // Non-negative and finite (checked by the caller); saturates beyond u64.
    let total = seconds.round() as u64;
    match total {
        0..60 => format!("{total}s"),
        60..3600 => format!("{}m{:02}s", total / 60, total % 60),
        _ => format!("{}h{:02}m", total / 3600, (total % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress() -> Progress {
        let mut p = Progress::default();
        p.table = "posthog_events".into();
        p.pages = 12;
        p.rows_read = 1500;
        p.rows_deduplicated = 300;
        p.rows_output = 1200;
        p.rows_per_second = 850.4;
        p
    }

    #[test]
    fn message_without_and_with_an_eta() {
        let mut p = progress();
        assert_eq!(message(&p), "1200 rows out, 1500 read, 300 dup, 850 rows/s");
        p.eta_seconds = Some(185.0);
        assert!(message(&p).ends_with(", eta 3m05s"), "{}", message(&p));
        p.eta_seconds = Some(f64::NAN);
        assert!(!message(&p).contains("eta"));
        p.rows_output = 1;
        assert!(message(&p).starts_with("1 row out, "), "{}", message(&p));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(0.2), "0s");
        assert_eq!(human_duration(42.0), "42s");
        assert_eq!(human_duration(3600.0 * 2.0 + 7.0 * 60.0), "2h07m");
    }

    #[test]
    fn fractions_become_clamped_steps() {
        assert_eq!(steps(0.5), 500);
        assert_eq!(steps(-1.0), 0);
        assert_eq!(steps(7.0), STEPS);
        assert_eq!(steps(f64::NAN), 0);
    }

    #[test]
    fn the_observer_switches_to_a_bar_once_a_fraction_is_known() {
        let bar = ProgressBar::hidden();
        let observer = BarObserver::new(bar.clone());
        let mut p = progress();
        observer.progress(&p);
        assert_eq!(bar.length(), None);
        p.fraction = Some(0.25);
        observer.progress(&p);
        assert_eq!(bar.length(), Some(STEPS));
        assert_eq!(bar.position(), 250);
        assert_eq!(bar.prefix(), "posthog_events");
    }
}
