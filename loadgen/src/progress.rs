//! Progress while a run goes on: a bar on a terminal, or with `--progress` a plain line
//! on stderr every few seconds (for logs and pipes, where a bar draws nothing).

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::thousands;

/// How often a progress line is printed.
const EVERY: Duration = Duration::from_secs(5);

/// Where progress goes.
#[derive(Debug)]
pub(crate) enum Progress {
    /// Nowhere.
    Off,
    /// A bar on the terminal.
    Bar(ProgressBar),
    /// Lines on stderr.
    Lines {
        /// When the phase began.
        start: Instant,
        /// When the last line was printed (and the counts then).
        last: (Instant, u64),
    },
}

impl Progress {
    /// Progress of a phase: a bar of `len` steps drawn with `template` when stderr is a
    /// terminal and `bar` allows it, lines when `lines`, else nothing.
    pub(crate) fn new(bar: bool, lines: bool, len: u64, template: &str) -> Self {
        if lines {
            let now = Instant::now();
            return Self::Lines {
                start: now,
                last: (now, 0),
            };
        }
        if !bar || !std::io::stderr().is_terminal() {
            return Self::Off;
        }
        let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(template) {
            pb.set_style(style.progress_chars("=> "));
        }
        Self::Bar(pb)
    }

    /// Connections with an outcome so far, of `planned`.
    pub(crate) fn connecting(&mut self, done: u64, failed: u64, planned: u64) {
        match self {
            Self::Off => {}
            Self::Bar(pb) => {
                pb.set_position(done + failed);
                if failed > 0 {
                    pb.set_message(format!("({failed} failed)"));
                }
            }
            Self::Lines { start, last } => {
                let now = Instant::now();
                if now - last.0 < EVERY {
                    return;
                }
                let rate = (done.saturating_sub(last.1)) as f64 / (now - last.0).as_secs_f64();
                eprintln!(
                    "loadgen: {:>5.0} s connecting: {} of {} open ({} conn/s), {} failed",
                    (now - *start).as_secs_f64(),
                    thousands(done as f64),
                    thousands(planned as f64),
                    thousands(rate),
                    failed
                );
                *last = (now, done);
            }
        }
    }

    /// A timed phase at `pos_ms` of its length: `counted` so far (deliveries, echoes…),
    /// `rate` the latest rate, and a message for the bar.
    pub(crate) fn running(&mut self, pos_ms: u64, counted: u64, message: &str) {
        match self {
            Self::Off => {}
            Self::Bar(pb) => {
                pb.set_position(pos_ms);
                pb.set_message(message.to_owned());
            }
            Self::Lines { start, last } => {
                let now = Instant::now();
                if now - last.0 < EVERY {
                    return;
                }
                eprintln!("loadgen: {:>5.0} s {message}", (now - *start).as_secs_f64());
                *last = (now, counted);
            }
        }
    }

    /// Ends the phase (clears a bar).
    pub(crate) fn finish(self) {
        if let Self::Bar(pb) = self {
            pb.finish_and_clear();
        }
    }
}
