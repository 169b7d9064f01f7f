//! The live status of a running fleet: a line redrawn in place on a terminal (indicatif), or
//! plain periodic lines when the output goes to a file or a pipe, where redrawing would only
//! leave control characters behind.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::stats::Counts;

/// How often plain lines are printed when the output is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// Shows how the fleet is doing; call [`Status::update`] about once a second.
pub struct Status {
    bar: Option<ProgressBar>,
    previous: Option<(Instant, u64)>,
    last_plain: Option<Instant>,
}

impl Status {
    /// A status line on the terminal when `interactive`, else plain lines on stdout.
    pub fn new(interactive: bool) -> Status {
        let bar = interactive.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar
        });
        Status {
            bar,
            previous: None,
            last_plain: None,
        }
    }

    /// Shows `totals`, with the rate of telemetry since the previous update.
    pub fn update(&mut self, totals: &Counts, note: Option<&str>) {
        let now = Instant::now();
        let per_second = match self.previous {
            Some((then, sent)) => {
                let seconds = now.duration_since(then).as_secs_f64();
                if seconds > 0.0 {
                    totals.telemetry_sent.saturating_sub(sent) as f64 / seconds
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        self.previous = Some((now, totals.telemetry_sent));
        let mut line = status_line(totals, per_second);
        if let Some(note) = note {
            line.push_str(" | last error: ");
            line.push_str(note);
        }
        match &self.bar {
            Some(bar) => {
                bar.set_message(line);
                bar.tick();
            }
            None => {
                if self
                    .last_plain
                    .is_none_or(|last| now.duration_since(last) >= PLAIN_EVERY)
                {
                    self.last_plain = Some(now);
                    println!("{line}");
                }
            }
        }
    }

    /// Clears the status line, so the summary starts on a clean line.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// One line: devices online, telemetry per second, commands answered, errors.
pub fn status_line(totals: &Counts, per_second: f64) -> String {
    format!(
        "online {}/{} | {:.1} msg/s | sent {} | commands answered {} | errors {}",
        totals.online,
        totals.devices,
        per_second,
        totals.telemetry_sent,
        totals.answered(),
        totals.errors()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_names_what_matters() {
        let totals = Counts {
            devices: 10,
            online: 9,
            telemetry_sent: 100,
            answered_succeeded: 2,
            answered_rejected: 1,
            connection_errors: 4,
            ..Counts::default()
        };
        assert_eq!(
            status_line(&totals, 12.34),
            "online 9/10 | 12.3 msg/s | sent 100 | commands answered 3 | errors 4"
        );
    }
}
