//! Reading entries back, for `hearth audit export` and the `/admin/audit`
//! route: the lines as written (so a SIEM can check their hashes), filtered
//! by time and sequence number.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::writer::log_files;
use crate::AuditError;

/// Which entries to read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query {
    /// Entries stamped at or after this time.
    pub since: Option<SystemTime>,
    /// Entries with a sequence number above this one (to page on).
    pub after_seq: Option<u64>,
    /// At most this many entries.
    pub limit: Option<usize>,
}

/// Writes the entries `query` selects from the log in `dir`, oldest first,
/// one JSON line each; returns how many.
pub fn export(dir: &Path, query: &Query, out: &mut dyn Write) -> Result<usize, AuditError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AuditError::Io { path, source }
    };
    let mut written = 0;
    for file in log_files(dir).map_err(io(dir))? {
        let reader = BufReader::new(std::fs::File::open(&file).map_err(io(&file))?);
        for line in reader.lines() {
            if query.limit.is_some_and(|l| written >= l) {
                return Ok(written);
            }
            let line = line.map_err(io(&file))?;
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
                // A torn tail the writer has not cut off yet.
                continue;
            };
            if let Some(after) = query.after_seq {
                if entry["seq"].as_u64().is_none_or(|seq| seq <= after) {
                    continue;
                }
            }
            if let Some(since) = query.since {
                let time = entry["time"]
                    .as_str()
                    .and_then(|t| humantime::parse_rfc3339(t).ok());
                if time.is_none_or(|t| t < since) {
                    continue;
                }
            }
            writeln!(out, "{line}").map_err(io(&file))?;
            written += 1;
        }
    }
    Ok(written)
}

/// A point in time as people write it: `2026-11-01T00:00:00Z`, or an age
/// before `now` such as `24h` or `7d`.
pub fn parse_since(text: &str, now: SystemTime) -> Option<SystemTime> {
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Some(t);
    }
    let age: Duration = humantime::parse_duration(text).ok()?;
    now.checked_sub(age)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_times_and_ages() {
        let now = humantime::parse_rfc3339("2026-11-25T12:00:00Z").unwrap();
        assert_eq!(
            parse_since("2h", now),
            humantime::parse_rfc3339("2026-11-25T10:00:00Z").ok()
        );
        assert_eq!(
            parse_since("2026-11-01T00:00:00Z", now),
            humantime::parse_rfc3339("2026-11-01T00:00:00Z").ok()
        );
        assert_eq!(parse_since("yesterday-ish", now), None);
    }
}
