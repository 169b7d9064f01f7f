//! The result table: one row per measured goal, case and baseline side by side, printed as
//! Markdown so that it can go into the README as it is.

use std::fmt::Write as _;
use std::time::Duration;

use crate::load::Stats;

/// One side of a row: a rate and two latencies, any of which may not apply.
#[derive(Default, Clone)]
pub struct Side {
    pub label: String,
    pub rate: Option<String>,
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
}

impl Side {
    /// A load run: `label`, its rate in `unit`, and its latencies.
    pub fn from_stats(label: impl Into<String>, stats: &Stats, unit: &str) -> Side {
        Side {
            label: label.into(),
            rate: Some(format!("{} {unit}", thousands(stats.rate()))),
            p50: stats.p50(),
            p99: stats.p99(),
        }
    }

    /// A single measured quantity (a memory size, a count).
    pub fn value(label: impl Into<String>, value: impl Into<String>) -> Side {
        Side {
            label: label.into(),
            rate: Some(value.into()),
            ..Side::default()
        }
    }
}

/// One line of the table.
pub struct Row {
    pub case: String,
    pub measured: Side,
    pub baseline: Side,
    /// The ratio or difference the goal is about, as shown.
    pub ratio: String,
    pub goal: String,
    pub met: bool,
    /// Shown under the table: failed requests, losses, what limited the run.
    pub notes: Vec<String>,
}

/// Every row so far, printed at the end (and after each case, so a long run shows progress).
#[derive(Default)]
pub struct Table {
    pub rows: Vec<Row>,
}

impl Table {
    pub fn push(&mut self, row: Row) {
        eprintln!("{}", render(std::slice::from_ref(&row)));
        self.rows.push(row);
    }

    pub fn render(&self) -> String {
        render(&self.rows)
    }
}

fn render(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(
        "| case | measured | rate | p50 | p99 | baseline | rate | p50 | p99 | ratio | goal | met |\n",
    );
    out.push_str("|---|---|--:|--:|--:|---|--:|--:|--:|--:|---|---|\n");
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.case,
            row.measured.label,
            row.measured.rate.as_deref().unwrap_or("–"),
            ms(row.measured.p50),
            ms(row.measured.p99),
            row.baseline.label,
            row.baseline.rate.as_deref().unwrap_or("–"),
            ms(row.baseline.p50),
            ms(row.baseline.p99),
            row.ratio,
            row.goal,
            if row.met { "met" } else { "**missed**" },
        );
    }
    let notes: Vec<&String> = rows.iter().flat_map(|row| &row.notes).collect();
    if !notes.is_empty() {
        out.push('\n');
        for note in notes {
            let _ = writeln!(out, "- {note}");
        }
    }
    out
}

/// Milliseconds with a precision that suits the size.
pub fn ms(latency: Option<Duration>) -> String {
    match latency {
        None => "–".to_owned(),
        Some(d) => {
            let ms = d.as_secs_f64() * 1000.0;
            if ms < 10.0 {
                format!("{ms:.2} ms")
            } else {
                format!("{ms:.1} ms")
            }
        }
    }
}

/// `12345.6` → `12,346`; rates under 100 keep one decimal.
pub fn thousands(value: f64) -> String {
    if value < 100.0 {
        return format!("{value:.1}");
    }
    let digits = format!("{:.0}", value);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes as MB (10^6), as the goals are written.
pub fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// A note for a run whose operations did not all succeed.
pub fn failures(name: &str, stats: &Stats) -> Option<String> {
    (stats.failed > 0).then(|| {
        format!(
            "{name}: {} of {} operations failed; first: {}",
            stats.failed,
            stats.failed + stats.ok,
            stats.first_error.as_deref().unwrap_or("?")
        )
    })
}
