//! The line format and its hashes, as pure functions both the writer and
//! the verifier use.
//!
//! A line is a JSON object: `seq`, `time`, `prev`, the event's own fields
//! and `hash`, the SHA-256 of the object's canonical serialisation without
//! `hash` (keys sorted, as serde_json's map writes them). `prev` is the
//! previous line's `hash`; the very first line's is [`GENESIS`].

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::event::Event;

/// `prev` of the first line ever written.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash a line's object must carry: SHA-256 over the object without its
/// `hash` field.
pub fn line_hash(object: &Map<String, Value>) -> String {
    let mut without = object.clone();
    without.remove("hash");
    // Sorted keys make the serialisation canonical whatever order the line
    // was parsed in.
    let sorted: std::collections::BTreeMap<&String, &Value> = without.iter().collect();
    let text = serde_json::to_string(&sorted).expect("a JSON map serialises");
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// One sealed line (without its newline) and its hash.
pub(crate) fn seal(seq: u64, time: &str, prev: &str, event: &Event) -> (String, String) {
    let Value::Object(mut object) = serde_json::to_value(event).expect("events serialise") else {
        unreachable!("an internally tagged enum serialises to an object")
    };
    object.insert("seq".into(), seq.into());
    object.insert("time".into(), time.into());
    object.insert("prev".into(), prev.into());
    let hash = line_hash(&object);
    object.insert("hash".into(), hash.clone().into());
    let sorted: std::collections::BTreeMap<&String, &Value> = object.iter().collect();
    (
        serde_json::to_string(&sorted).expect("a JSON map serialises"),
        hash,
    )
}

/// The bytes a checkpoint signs: the chain's head as of the entry it covers.
pub(crate) fn checkpoint_message(covers: u64, head: &str) -> Vec<u8> {
    format!("hearth-audit-checkpoint-v1\n{covers}\n{head}\n").into_bytes()
}

/// A parsed line with its chain fields.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub object: Map<String, Value>,
    pub seq: u64,
    pub prev: String,
    pub hash: String,
}

/// Parses one line and checks it against its own hash.
pub(crate) fn parse(line: &str) -> Result<Parsed, String> {
    let object: Map<String, Value> =
        serde_json::from_str(line).map_err(|e| format!("not a JSON object: {e}"))?;
    let text = |k: &str| {
        object
            .get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("no `{k}`"))
    };
    let hash = text("hash")?;
    let prev = text("prev")?;
    let seq = object
        .get("seq")
        .and_then(Value::as_u64)
        .ok_or("no `seq`")?;
    if line_hash(&object) != hash {
        return Err("its content does not match its hash (edited)".into());
    }
    Ok(Parsed {
        object,
        seq,
        prev,
        hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_line_parses_back_and_any_edit_breaks_it() {
        let e = Event::ModelUnload {
            model: "smollm2".into(),
        };
        let (line, hash) = seal(7, "2026-11-25T10:00:00.000Z", GENESIS, &e);
        let p = parse(&line).unwrap();
        assert_eq!(
            (p.seq, p.prev.as_str(), p.hash.as_str()),
            (7, GENESIS, hash.as_str())
        );
        let edited = line.replace("smollm2", "smollm3");
        assert!(parse(&edited).unwrap_err().contains("edited"));
    }
}
