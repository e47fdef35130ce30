//! The JSON Lines sink.

use std::{
    fs::{File, OpenOptions},
    io::{self, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use portcullis_core::audit::AuditEvent;
use serde_json::Value;

use crate::chain::{GENESIS, link};

/// Appends audit events to a hash-chained JSON Lines file.
///
/// Each line is the event's JSON with three more members: `seq` (1, 2, …), `prev_hash` (the
/// previous line's `hash`, or 64 zeros) and `hash` (SHA-256 over `prev_hash`, a newline and the
/// line's canonical JSON without `prev_hash` and `hash`). [`JsonlSink::append`] returns only
/// once the batch is on disk; on open, the chain's head is recovered from the last line, and a
/// torn last line (a crash mid-write, never acknowledged) is cut off.
#[derive(Debug)]
pub struct JsonlSink {
    file: File,
    path: PathBuf,
    seq: u64,
    head: String,
}

impl JsonlSink {
    /// Open (or create) the file at `path` and recover the chain's head.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let (seq, head, keep) = recover(&mut file)?;
        if keep < file.metadata()?.len() {
            tracing::warn!(target: "portcullis::audit", path = %path.display(), "cutting a torn last line left by a crash");
            file.set_len(keep)?;
            file.sync_all()?;
        }
        Ok(Self {
            file,
            path,
            seq,
            head,
        })
    }

    /// Append `events` and make them durable (fsync) before returning.
    pub fn append(&mut self, events: &[AuditEvent]) -> io::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(events.len() * 512);
        let (mut seq, mut head) = (self.seq, self.head.clone());
        for event in events {
            let Value::Object(mut line) = serde_json::to_value(event).map_err(io::Error::other)?
            else {
                return Err(io::Error::other("an audit event is a JSON object"));
            };
            seq += 1;
            line.insert("seq".into(), seq.into());
            // The canonical form (the line without prev_hash and hash) is serialized once; the
            // line is that object with the two members added before its closing brace.
            let canonical = serde_json::to_vec(&Value::Object(line)).map_err(io::Error::other)?;
            let hash = link(&head, &canonical);
            buf.extend_from_slice(&canonical[..canonical.len() - 1]);
            buf.extend_from_slice(br#","prev_hash":""#);
            buf.extend_from_slice(head.as_bytes());
            buf.extend_from_slice(br#"","hash":""#);
            buf.extend_from_slice(hash.as_bytes());
            buf.extend_from_slice(b"\"}\n");
            head = hash;
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        self.seq = seq;
        self.head = head;
        Ok(())
    }

    /// The number of events in the file.
    pub fn len(&self) -> u64 {
        self.seq
    }

    /// Whether the file holds no event.
    pub fn is_empty(&self) -> bool {
        self.seq == 0
    }

    /// The `hash` of the last line.
    pub fn head(&self) -> &str {
        &self.head
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The last complete line's `seq` and `hash`, and the length of the file up to its end.
fn recover(file: &mut File) -> io::Result<(u64, String, u64)> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok((0, GENESIS.to_owned(), 0));
    }
    // Read backwards in chunks until the last complete line is in hand.
    let mut tail = Vec::new();
    let mut pos = len;
    loop {
        let step = pos.min(64 * 1024);
        pos -= step;
        file.seek(SeekFrom::Start(pos))?;
        let mut chunk = vec![0; usize::try_from(step).expect("small chunk")];
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&tail);
        tail = chunk;
        let complete_end = tail.iter().rposition(|b| *b == b'\n');
        if let Some(end) = complete_end {
            let start = tail[..end].iter().rposition(|b| *b == b'\n').map(|i| i + 1);
            if start.is_some() || pos == 0 {
                let start = start.unwrap_or(0);
                let keep = pos + end as u64 + 1;
                let line: Value = serde_json::from_slice(&tail[start..end]).map_err(|_| {
                    io::Error::other("the last audit line is not JSON: run `audit verify`")
                })?;
                let seq = line.get("seq").and_then(Value::as_u64);
                let hash = line.get("hash").and_then(Value::as_str);
                return match (seq, hash) {
                    (Some(seq), Some(hash)) => Ok((seq, hash.to_owned(), keep)),
                    _ => Err(io::Error::other("the last audit line has no seq or hash")),
                };
            }
        } else if pos == 0 {
            // One torn line and nothing else.
            return Ok((0, GENESIS.to_owned(), 0));
        }
    }
}
