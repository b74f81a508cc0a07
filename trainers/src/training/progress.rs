//! The progress bar and log lines of a training run.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// What a run shows while it trains. On a terminal: a bar redrawn every step (step, the
/// latest loss and accuracy, tokens/s, ETA), with the periodic log lines printed above it. Not
/// on a terminal (a log file, CI): the periodic log lines only.
pub struct Progress {
    started: Instant,
    first_step: usize,
    total: usize,
    tokens: usize,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Progress over steps `first_step..total`.
    pub fn new(first_step: usize, total: usize) -> Self {
        // A secondary replica draws nothing (the main one shows the run).
        let shown = super::speaks() && std::io::stdout().is_terminal();
        let bar = shown.then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stdout());
            bar.set_style(
                ProgressStyle::with_template("[{bar:24}] {pos:>5}/{len} {msg} · eta {eta}")
                    .expect("a valid template")
                    .progress_chars("#>."),
            );
            bar.set_position(first_step as u64);
            bar
        });
        Self {
            started: Instant::now(),
            first_step,
            total,
            tokens: 0,
            bar,
        }
    }

    /// Counts the tokens of a processed batch.
    pub fn add_tokens(&mut self, tokens: usize) {
        self.tokens += tokens;
    }

    /// Tokens per second since the start.
    pub fn tokens_per_second(&self) -> f64 {
        self.tokens as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    /// Redraws the bar after `step` (a no-op off a terminal).
    pub fn update(&self, step: usize, label: &str, fields: &str) {
        if let Some(bar) = &self.bar {
            bar.set_position(step as u64 + 1);
            bar.set_message(format!(
                "{label} {fields} · {:.0} tok/s",
                self.tokens_per_second()
            ));
        }
    }

    /// The periodic log line `step N/total label fields · tok/s · eta`.
    pub fn line(&self, step: usize, label: &str, fields: &str) {
        let done = (step + 1 - self.first_step).max(1) as f64;
        let elapsed = self.started.elapsed().as_secs_f64();
        let eta = elapsed / done * (self.total - step - 1) as f64;
        self.println(&format!(
            "step {:>5}/{} {label} {fields} · {:.0} tok/s · eta {}",
            step + 1,
            self.total,
            self.tokens_per_second(),
            format_duration(eta)
        ));
    }

    /// Prints a line (above the bar on a terminal).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => crate::say!("{line}"),
        }
    }

    /// Leaves the bar as it is and moves below it.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }
}

/// `1h02m`, `3m05s`, `12s`.
pub fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}
