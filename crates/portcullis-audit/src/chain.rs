//! The hash chain of a JSON Lines audit file, and its verification.

use std::{fmt, io::BufRead, path::Path};

use aws_lc_rs::digest::{SHA256, digest};
use serde_json::{Map, Value};

/// The `prev_hash` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The canonical bytes of a line without its `prev_hash` and `hash`: compact JSON, members in
/// the order serde_json keeps them (the order they were written in).
pub(crate) fn canonical(mut line: Map<String, Value>) -> Vec<u8> {
    line.remove("prev_hash");
    line.remove("hash");
    serde_json::to_vec(&Value::Object(line)).expect("a JSON map serializes")
}

/// `hex(SHA-256(prev_hash ‖ "\n" ‖ canonical))`.
pub(crate) fn link(prev_hash: &str, canonical: &[u8]) -> String {
    let mut input = Vec::with_capacity(prev_hash.len() + 1 + canonical.len());
    input.extend_from_slice(prev_hash.as_bytes());
    input.push(b'\n');
    input.extend_from_slice(canonical);
    digest(&SHA256, &input)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A file that verified: how many events, and the head of the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// How many lines (events).
    pub events: u64,
    /// The `hash` of the last line ([`GENESIS`] for an empty file).
    pub head: String,
}

/// Where and how a file fails verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyError {
    /// The 1-based line number.
    pub line: u64,
    /// What is wrong there.
    pub kind: VerifyErrorKind,
}

/// What is wrong with a line.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyErrorKind {
    /// Not a JSON object with `seq`, `prev_hash` and `hash`.
    Malformed,
    /// `seq` is not the previous line's plus one: a line before it was removed, or lines moved.
    Sequence {
        /// The `seq` expected here.
        expected: u64,
        /// The `seq` found.
        found: u64,
    },
    /// `prev_hash` is not the previous line's `hash`: a line was removed, inserted or moved.
    BrokenLink,
    /// `hash` does not match the line's content: the line was changed.
    Altered,
    /// The file could not be read.
    Io(String),
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.kind {
            VerifyErrorKind::Malformed => "is not an audit record".to_owned(),
            VerifyErrorKind::Sequence { expected, found } => format!(
                "has seq {found}, expected {expected}: a line was removed or lines were reordered"
            ),
            VerifyErrorKind::BrokenLink => {
                "does not chain to the line before it: a line was removed, inserted or moved"
                    .to_owned()
            }
            VerifyErrorKind::Altered => "was changed after it was written".to_owned(),
            VerifyErrorKind::Io(e) => format!("could not be read: {e}"),
        };
        write!(f, "line {} {what}", self.line)
    }
}

impl std::error::Error for VerifyError {}

/// Verify the audit file at `path`.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("audit.jsonl");
/// use portcullis_audit::{JsonlSink, verify};
/// use portcullis_core::audit::{AuditEvent, Outcome};
///
/// let mut sink = JsonlSink::open(&path).unwrap();
/// sink.append(&[AuditEvent::new("authn.failed", Outcome::Failure)]).unwrap();
/// assert_eq!(verify(&path).unwrap().events, 1);
/// ```
pub fn verify(path: impl AsRef<Path>) -> Result<Verified, VerifyError> {
    let file = std::fs::File::open(path).map_err(|e| VerifyError {
        line: 0,
        kind: VerifyErrorKind::Io(e.to_string()),
    })?;
    verify_reader(std::io::BufReader::new(file))
}

/// Verify audit lines read from `reader`.
pub fn verify_reader(reader: impl BufRead) -> Result<Verified, VerifyError> {
    let mut head = GENESIS.to_owned();
    let mut events = 0u64;
    for (i, line) in reader.lines().enumerate() {
        let n = i as u64 + 1;
        let fail = |kind| VerifyError { line: n, kind };
        let line = line.map_err(|e| fail(VerifyErrorKind::Io(e.to_string())))?;
        let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&line) else {
            return Err(fail(VerifyErrorKind::Malformed));
        };
        let (Some(seq), Some(prev), Some(hash)) = (
            map.get("seq").and_then(Value::as_u64),
            map.get("prev_hash")
                .and_then(Value::as_str)
                .map(str::to_owned),
            map.get("hash").and_then(Value::as_str).map(str::to_owned),
        ) else {
            return Err(fail(VerifyErrorKind::Malformed));
        };
        if seq != events + 1 {
            return Err(fail(VerifyErrorKind::Sequence {
                expected: events + 1,
                found: seq,
            }));
        }
        if prev != head {
            return Err(fail(VerifyErrorKind::BrokenLink));
        }
        if link(&prev, &canonical(map)) != hash {
            return Err(fail(VerifyErrorKind::Altered));
        }
        head = hash;
        events = seq;
    }
    Ok(Verified { events, head })
}
