//! [`Row`]: what one scenario on one backend measured, and [`write()`], which turns the
//! rows of a run into `docs/reliability.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::error::{FaultsError, Result};

/// How a scenario on a backend ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every expectation met.
    Pass,
    /// An expectation was not met; the reason names it.
    Fail(String),
    /// The scenario does not apply to the backend; why.
    NotApplicable(String),
    /// The harness could not run the scenario (a server that would not start).
    Error(String),
}

impl Outcome {
    /// Whether the row counts as a success (pass or not applicable).
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Pass | Outcome::NotApplicable(_))
    }
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// The scenario (`1 hang`).
    pub scenario: String,
    /// The backend (`postgres`).
    pub backend: String,
    /// Live members seen down by the observer outside the recovery window.
    pub false_downs: u64,
    /// Live members missing from the listing after recovery.
    pub members_lost: u64,
    /// Records lost (forced-down flags, committed records), `None` when not measured.
    pub records_lost: Option<u64>,
    /// Errors the member processes got, by kind.
    pub member_errors: BTreeMap<String, u64>,
    /// Errors the observer got (listing and watch), by kind.
    pub observer_errors: BTreeMap<String, u64>,
    /// Last fault → every live member listed up.
    pub recovery: Option<Duration>,
    /// Pass / fail / not applicable.
    pub outcome: Outcome,
    /// What else was measured.
    pub notes: Vec<String>,
    /// How long the row took to run.
    pub took: Duration,
}

impl Row {
    /// An empty row for `scenario` on `backend` (outcome: pass until judged).
    pub fn new(scenario: &str, backend: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            backend: backend.to_owned(),
            false_downs: 0,
            members_lost: 0,
            records_lost: None,
            member_errors: BTreeMap::new(),
            observer_errors: BTreeMap::new(),
            recovery: None,
            outcome: Outcome::Pass,
            notes: Vec::new(),
            took: Duration::ZERO,
        }
    }

    /// Records a failed expectation (the first failure decides the outcome; later
    /// ones are added to its reason).
    pub fn fail(&mut self, reason: impl Into<String>) {
        let reason = reason.into();
        self.outcome = match std::mem::replace(&mut self.outcome, Outcome::Pass) {
            Outcome::Fail(previous) => Outcome::Fail(format!("{previous}; {reason}")),
            _ => Outcome::Fail(reason),
        };
    }

    /// Adds a note.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// A one-line summary for the console.
    pub fn summary(&self) -> String {
        format!(
            "{} on {}: {} (false downs {}, lost {}, recovery {}, member errors {}, observer errors {})",
            self.scenario,
            self.backend,
            outcome_text(&self.outcome),
            self.false_downs,
            self.members_lost,
            duration_text(self.recovery),
            kinds_text(&self.member_errors),
            kinds_text(&self.observer_errors),
        )
    }
}

fn outcome_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Pass => "pass".into(),
        Outcome::Fail(why) => format!("**FAIL**: {why}"),
        Outcome::NotApplicable(why) => format!("n/a: {why}"),
        Outcome::Error(why) => format!("**not run**: {why}"),
    }
}

fn duration_text(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!("{:.2} s", d.as_secs_f64()),
        None => "–".into(),
    }
}

/// `timeout 12, unavailable 3` (or `0`).
pub fn kinds_text(kinds: &BTreeMap<String, u64>) -> String {
    if kinds.is_empty() {
        return "0".into();
    }
    kinds
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the run was.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The command line.
    pub command: String,
    /// When it started (UTC).
    pub date: String,
    /// The machine (`uname`, cores, memory).
    pub machine: String,
    /// Fleet and timing.
    pub setup: String,
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The table of `rows` as Markdown.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str("| scenario | backend | false downs | members lost | records lost | errors seen by members | errors seen by the observer | time to recover | result | notes |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let na = matches!(r.outcome, Outcome::NotApplicable(_) | Outcome::Error(_));
        let num = |n: u64| if na { "–".to_owned() } else { n.to_string() };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&r.scenario),
            cell(&r.backend),
            num(r.false_downs),
            num(r.members_lost),
            if na {
                "–".into()
            } else {
                r.records_lost
                    .map_or("not measured".into(), |n| n.to_string())
            },
            if na {
                "–".into()
            } else {
                kinds_text(&r.member_errors)
            },
            if na {
                "–".into()
            } else {
                kinds_text(&r.observer_errors)
            },
            if na {
                "–".into()
            } else {
                duration_text(r.recovery)
            },
            cell(&outcome_text(&r.outcome)),
            cell(&r.notes.join("; ")),
        );
    }
    out
}

/// Writes the report: `head` (the fixed text: what each scenario does and expects),
/// the run's facts, and the table.
pub fn write(path: &Path, head: &str, info: &RunInfo, rows: &[Row], tail: &str) -> Result<()> {
    let mut out = String::new();
    out.push_str(head);
    let _ = write!(
        out,
        "\n## The run\n\n- command: `{}`\n- date: {}\n- machine: {}\n- setup: {}\n- rows: {} ({} pass, {} fail, {} not applicable, {} not run)\n\n",
        info.command,
        info.date,
        info.machine,
        info.setup,
        rows.len(),
        rows.iter().filter(|r| r.outcome == Outcome::Pass).count(),
        rows.iter().filter(|r| matches!(r.outcome, Outcome::Fail(_))).count(),
        rows.iter().filter(|r| matches!(r.outcome, Outcome::NotApplicable(_))).count(),
        rows.iter().filter(|r| matches!(r.outcome, Outcome::Error(_))).count(),
    );
    out.push_str(&table(rows));
    out.push_str(tail);
    std::fs::write(path, out).map_err(|e| FaultsError::io(format!("write {}", path.display()), e))
}
