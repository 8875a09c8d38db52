//! A sync session's log: one entry per step with its timing, stored as gzip
//! compressed JSON lines. Entries hold messages written by the engine, never a
//! secret.

use std::{io::Write, time::Instant};

use flate2::{Compression, write::GzEncoder};
use serde::{Deserialize, Serialize};

/// One line of a session's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Milliseconds since the session started.
    pub at_ms: u64,
    /// The step, e.g. `check_settings`.
    pub step: String,
    /// `info`, `warn` or `error`.
    pub level: String,
    /// What happened.
    pub message: String,
    /// How long the step took, when the entry closes a step.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub duration_ms: Option<u64>,
}

/// Collects a session's log while it runs.
#[derive(Debug)]
pub struct SessionLog {
    started: Instant,
    entries: Vec<LogEntry>,
}

impl Default for SessionLog {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionLog {
    /// An empty log whose clock starts now.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            entries: Vec::new(),
        }
    }

    /// Adds a line.
    pub fn push(&mut self, step: &str, level: &str, message: impl Into<String>) {
        self.push_timed(step, level, message, None);
    }

    /// Adds a line that closes a step begun at `step_started`.
    pub fn finish_step(&mut self, step: &str, step_started: Instant, message: impl Into<String>) {
        let duration = u64::try_from(step_started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.push_timed(step, "info", message, Some(duration));
    }

    fn push_timed(&mut self, step: &str, level: &str, message: impl Into<String>, duration_ms: Option<u64>) {
        self.entries.push(LogEntry {
            at_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            step: step.to_owned(),
            level: level.to_owned(),
            message: message.into(),
            duration_ms,
        });
    }

    /// The entries so far.
    pub fn entries(&self) -> &[LogEntry] {
        &self.entries
    }

    /// The log as gzip-compressed JSON lines.
    pub fn to_gzip(&self) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        for entry in &self.entries {
            // Serializing a struct of strings and numbers cannot fail, and
            // writing into a Vec cannot either.
            if let Ok(line) = serde_json::to_vec(entry) {
                let _ = encoder.write_all(&line);
                let _ = encoder.write_all(b"\n");
            }
        }
        encoder.finish().unwrap_or_default()
    }
}

/// Reads a stored log back.
pub fn decode_gzip(bytes: &[u8]) -> std::io::Result<Vec<LogEntry>> {
    use std::io::{BufRead, BufReader};
    let reader = BufReader::new(flate2::read::GzDecoder::new(bytes));
    let mut entries = Vec::new();
    for line in reader.lines() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        entries.push(serde_json::from_str(&line).map_err(std::io::Error::other)?);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_round_trips_through_gzip() {
        let mut log = SessionLog::new();
        let step = Instant::now();
        log.push("claim", "info", "Lease taken.");
        log.finish_step("check_settings", step, "Settings complete.");
        let decoded = decode_gzip(&log.to_gzip()).expect("decodes");
        assert_eq!(decoded, log.entries());
        assert!(decoded[1].duration_ms.is_some());
    }
}
