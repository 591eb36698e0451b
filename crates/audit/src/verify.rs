//! Checking a log: every line against its hash, each against the one
//! before, every checkpoint against the public key; the first failure is
//! named by file, line and sequence number.

use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde_json::Value;

use crate::chain::{self, GENESIS};
use crate::key::key_id;

/// What a clean log holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub files: usize,
    pub entries: u64,
    pub checkpoints: u64,
    /// Sequence number the last checkpoint covers (0: none).
    pub signed_through: u64,
    /// Entries after the last checkpoint: chained but not yet signed.
    pub unsigned_tail: u64,
}

/// Where and why a log stops verifying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: line {line}{}: {reason}", file.display(), seq.map(|s| format!(" (seq {s})")).unwrap_or_default())]
pub struct Failure {
    pub file: PathBuf,
    /// 1-based line number within `file`.
    pub line: u64,
    /// The line's own sequence number, when it could be read.
    pub seq: Option<u64>,
    pub reason: String,
}

/// Verifies `files` in order as one chain. The first file's first line
/// must start the chain (`prev` = genesis) unless `from_middle`, when its
/// `prev` is taken on trust.
pub fn verify(files: &[PathBuf], key: &VerifyingKey, from_middle: bool) -> Result<Report, Failure> {
    let mut report = Report {
        files: files.len(),
        entries: 0,
        checkpoints: 0,
        signed_through: 0,
        unsigned_tail: 0,
    };
    let expected_key = key_id(key);
    let mut head: Option<(u64, String)> = if from_middle {
        None
    } else {
        Some((0, GENESIS.to_string()))
    };
    for file in files {
        let fail = |line: u64, seq: Option<u64>, reason: String| Failure {
            file: file.clone(),
            line,
            seq,
            reason,
        };
        let bytes = std::fs::read(file).map_err(|e| fail(0, None, format!("cannot read: {e}")))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let line = e.as_bytes()[..e.utf8_error().valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count() as u64
                + 1;
            fail(line, None, "not UTF-8".into())
        })?;
        let mut rest = text.as_str();
        let mut number = 0;
        while !rest.is_empty() {
            number += 1;
            let Some((line, after)) = rest.split_once('\n') else {
                return Err(fail(
                    number,
                    None,
                    format!("cut short: {} bytes without a line end", rest.len()),
                ));
            };
            rest = after;
            let parsed = chain::parse(line).map_err(|r| fail(number, None, r))?;
            let seq = Some(parsed.seq);
            if let Some((prev_seq, prev_hash)) = &head {
                if parsed.seq != prev_seq + 1 {
                    return Err(fail(
                            number,
                            seq,
                            format!(
                                "sequence goes from {prev_seq} to {} (a line was deleted, inserted or moved)",
                                parsed.seq
                            ),
                        ));
                }
                if &parsed.prev != prev_hash {
                    return Err(fail(
                            number,
                            seq,
                            "does not follow the line before it (a line was deleted, inserted or moved)"
                                .into(),
                        ));
                }
            }
            if parsed.object.get("event").and_then(Value::as_str) == Some("checkpoint") {
                check_signature(&parsed, key, &expected_key).map_err(|r| fail(number, seq, r))?;
                report.checkpoints += 1;
                report.signed_through = parsed.seq - 1;
                report.unsigned_tail = 0;
            } else {
                report.unsigned_tail += 1;
            }
            report.entries += 1;
            head = Some((parsed.seq, parsed.hash));
        }
    }
    Ok(report)
}

fn check_signature(
    parsed: &chain::Parsed,
    key: &VerifyingKey,
    expected_key: &str,
) -> Result<(), String> {
    let field = |k: &str| {
        parsed
            .object
            .get(k)
            .ok_or(format!("checkpoint without `{k}`"))
    };
    let covers = field("covers")?
        .as_u64()
        .ok_or("checkpoint `covers` is not a number")?;
    if covers + 1 != parsed.seq {
        return Err(format!(
            "checkpoint covers {covers} but follows {}",
            parsed.seq - 1
        ));
    }
    let kid = field("key_id")?.as_str().unwrap_or_default();
    if kid != expected_key {
        return Err(format!(
            "checkpoint signed by key {kid}, not by the given key {expected_key}"
        ));
    }
    let sig = field("signature")?.as_str().unwrap_or_default();
    let sig: [u8; 64] = hex::decode(sig)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("checkpoint signature is not 64 bytes of hex")?;
    key.verify(
        &chain::checkpoint_message(covers, &parsed.prev),
        &Signature::from_bytes(&sig),
    )
    .map_err(|_| "checkpoint signature does not verify (forged or altered)".to_string())
}

/// The files of `dir` from `from` (a file in it) on, or all of them.
pub fn files_from(dir: &Path, from: Option<&Path>) -> std::io::Result<Vec<PathBuf>> {
    let all = crate::writer::log_files(dir)?;
    Ok(match from {
        None => all,
        Some(f) => {
            let name = f.file_name();
            all.into_iter()
                .skip_while(|p| p.file_name() != name)
                .collect()
        }
    })
}
