//! The JSON Lines sink: chain, tamper detection (naming the line), torn lines, and a writer
//! killed with SIGKILL mid-stream.

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
};

use portcullis_audit::{JsonlSink, VerifyErrorKind, verify};
use portcullis_core::audit::{AuditEvent, Outcome};

fn event(i: usize) -> AuditEvent {
    AuditEvent::new(
        if i.is_multiple_of(2) {
            "authn.succeeded"
        } else {
            "authz.denied"
        },
        Outcome::Success,
    )
    .target("route", format!("/orgs/org_a/items/{i}"))
    .reason("test")
}

fn write(path: &Path, n: usize) -> JsonlSink {
    let mut sink = JsonlSink::open(path).unwrap();
    let events: Vec<_> = (0..n).map(event).collect();
    for batch in events.chunks(7) {
        sink.append(batch).unwrap();
    }
    sink
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn rewrite(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn a_chain_verifies_and_continues_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let sink = write(&path, 50);
    let head = sink.head().to_owned();
    drop(sink);
    let v = verify(&path).unwrap();
    assert_eq!(v.events, 50);
    assert_eq!(v.head, head);

    let mut sink = JsonlSink::open(&path).unwrap();
    assert_eq!(sink.len(), 50);
    sink.append(&[event(50), event(51)]).unwrap();
    assert_eq!(verify(&path).unwrap().events, 52);

    // Every line carries the contract's members.
    let first: serde_json::Value = serde_json::from_str(&lines(&path)[0]).unwrap();
    for member in [
        "seq",
        "prev_hash",
        "hash",
        "id",
        "time",
        "action",
        "outcome",
    ] {
        assert!(first.get(member).is_some(), "{member}");
    }
    assert_eq!(first["seq"], 1);
}

#[test]
fn tampering_is_found_and_the_line_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    drop(write(&path, 20));
    let original = lines(&path);

    // An edited line.
    let mut edited = original.clone();
    edited[9] = edited[9].replace("authz.denied", "authz.allowed");
    rewrite(&path, &edited);
    let e = verify(&path).unwrap_err();
    assert_eq!((e.line, e.kind.clone()), (10, VerifyErrorKind::Altered));
    assert!(e.to_string().starts_with("line 10 "), "{e}");

    // A removed line.
    let mut removed = original.clone();
    removed.remove(9);
    rewrite(&path, &removed);
    let e = verify(&path).unwrap_err();
    assert_eq!(e.line, 10);
    assert_eq!(
        e.kind,
        VerifyErrorKind::Sequence {
            expected: 10,
            found: 11
        }
    );

    // Two lines swapped.
    let mut swapped = original.clone();
    swapped.swap(4, 5);
    rewrite(&path, &swapped);
    assert_eq!(verify(&path).unwrap_err().line, 5);

    // An edit whose own hash was recomputed breaks the next link.
    let mut forged = original.clone();
    let mut line: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&forged[9]).unwrap();
    line.insert("reason".into(), "covered up".into());
    let prev = line["prev_hash"].as_str().unwrap().to_owned();
    let mut body = line.clone();
    body.remove("prev_hash");
    body.remove("hash");
    let input = format!("{prev}\n{}", serde_json::to_string(&body).unwrap());
    let hash: String = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, input.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    line.insert("hash".into(), hash.into());
    forged[9] = serde_json::to_string(&line).unwrap();
    rewrite(&path, &forged);
    let e = verify(&path).unwrap_err();
    assert_eq!((e.line, e.kind), (11, VerifyErrorKind::BrokenLink));

    // A duplicated line, and garbage.
    let mut duplicated = original.clone();
    duplicated.insert(3, original[2].clone());
    rewrite(&path, &duplicated);
    assert_eq!(verify(&path).unwrap_err().line, 4);
    let mut garbage = original;
    garbage[0] = "not json".into();
    rewrite(&path, &garbage);
    assert_eq!(verify(&path).unwrap_err().kind, VerifyErrorKind::Malformed);
}

#[test]
fn a_torn_last_line_is_cut_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    drop(write(&path, 5));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(br#"{"schema":1,"id":"0190","act"#).unwrap();
    drop(f);
    assert!(verify(&path).is_err(), "torn before reopening");
    let mut sink = JsonlSink::open(&path).unwrap();
    assert_eq!(sink.len(), 5);
    sink.append(&[event(5)]).unwrap();
    assert_eq!(verify(&path).unwrap().events, 6);
}

const CHILD_ENV: &str = "PORTCULLIS_AUDIT_CRASH_WRITER";

/// The writer of `a_writer_killed_mid_stream_loses_nothing_it_acknowledged`: appends batches
/// forever, printing `acked <seq>` after each durable append. Does nothing in a normal run.
#[test]
fn crash_writer_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut sink = JsonlSink::open(&path).unwrap();
    let mut out = std::io::stdout().lock();
    for i in 0.. {
        let batch: Vec<_> = (0..10).map(|j| event(i * 10 + j)).collect();
        sink.append(&batch).unwrap();
        writeln!(out, "acked {}", sink.len()).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn a_writer_killed_mid_stream_loses_nothing_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut acked = 0u64;
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "crash_writer_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let target = acked + 200 + round * 37;
        while acked < target {
            line.clear();
            assert!(
                reader.read_line(&mut line).unwrap() > 0,
                "the writer stopped early"
            );
            if let Some(n) = line.trim().strip_prefix("acked ") {
                acked = n.parse().unwrap();
            }
        }
        child.kill().unwrap(); // SIGKILL, mid-stream
        child.wait().unwrap();

        // Restart: the torn tail (if any) is cut; everything acknowledged is there and verifies.
        let sink = JsonlSink::open(&path).unwrap();
        assert!(
            sink.len() >= acked,
            "round {round}: {} on disk, {acked} acknowledged",
            sink.len()
        );
        acked = sink.len();
        drop(sink);
        let v = verify(&path).unwrap();
        assert_eq!(v.events, acked);
    }
}
