//! Outbox durability across a kill: a writer process appends to an outbox and prints each
//! `seq` once `append` returned (committed); the test kills it with SIGKILL mid-stream and
//! checks that the database holds every printed entry, in order, with no gap and no
//! duplicate (at most one more, committed but killed before it was printed).
//!
//! The writer is this test binary run again with `--ignored --exact writer_process` and the
//! database path in an environment variable.

use kit::outbox::{Outbox, OutboxConfig};
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

const DB_ENV: &str = "KIT_OUTBOX_KILL_WRITER_DB";
const TOPIC: &str = "dt/pump/T/telemetry";
/// Entries the test waits to see committed before it kills the writer.
const KILL_AFTER: usize = 300;
/// Longest wait for the writer's next line; a slower writer fails the test.
const PATIENCE: Duration = Duration::from_secs(60);

/// The writer. Does nothing unless started by the test below with the database path.
#[test]
#[ignore = "helper process of outbox_keeps_every_committed_entry_across_a_kill; runs until killed"]
fn writer_process() {
    let Some(path) = std::env::var_os(DB_ENV) else { return };
    let outbox = Outbox::open(path, OutboxConfig::default()).expect("writer opens the outbox");
    for n in 0u64.. {
        let seq = outbox.append(TOPIC, format!("{{\"n\":{n}}}").as_bytes()).expect("append");
        // Printed only after append returned: everything printed is committed.
        println!("committed {seq} {n}");
    }
}

/// Kills the child if the test fails before it does.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads `committed {seq} {n}`; libtest's `test writer_process ... ` (no newline) may
/// precede the first one.
fn parse(line: &str) -> Option<(u64, u64)> {
    let start = line.find("committed ")? + "committed ".len();
    let mut parts = line[start..].split(' ');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[test]
fn outbox_keeps_every_committed_entry_across_a_kill() {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("outbox.db");
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "writer_process", "--nocapture", "--test-threads=1"])
        .env(DB_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = Reaper(child);
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut committed: Vec<(u64, u64)> = Vec::new();
    while committed.len() < KILL_AFTER {
        let line = rx.recv_timeout(PATIENCE).expect("the writer keeps committing");
        committed.extend(parse(&line));
    }
    child.0.kill().unwrap(); // SIGKILL: no destructor, no flush, no checkpoint.
    let status = child.0.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "the writer died by SIGKILL, not on its own: {status}");
    // Lines printed before the kill are still in the pipe.
    loop {
        match rx.recv_timeout(PATIENCE) {
            Ok(line) => committed.extend(parse(&line)),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => panic!("the pipe did not close after the kill"),
        }
    }
    reader.join().unwrap();

    // What the writer reported: seq 1, 2, 3, ... for n 0, 1, 2, ...
    for (i, &(seq, n)) in committed.iter().enumerate() {
        assert_eq!((seq, n), (i as u64 + 1, i as u64), "the writer's own report is in order");
    }

    let outbox = Outbox::open(&path, OutboxConfig::default()).expect("the outbox reopens after the kill");
    let stored: Vec<(u64, u64)> = outbox
        .peek(usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| {
            let body: serde_json::Value = serde_json::from_slice(&e.payload).unwrap();
            assert_eq!(e.topic, TOPIC);
            (e.seq, body["n"].as_u64().unwrap())
        })
        .collect();
    assert!(
        stored.len() == committed.len() || stored.len() == committed.len() + 1,
        "{} printed, {} stored: at most one committed entry may be unprinted",
        committed.len(),
        stored.len()
    );
    assert_eq!(stored[..committed.len()], committed[..], "every printed entry is stored, in order");
    for (i, &(seq, n)) in stored.iter().enumerate() {
        assert_eq!((seq, n), (i as u64 + 1, i as u64), "gap-free, in order, no duplicates");
    }
    // The reopened outbox carries on after the last stored seq.
    let next = outbox.append(TOPIC, b"{}").unwrap();
    assert_eq!(next, stored.len() as u64 + 1);
}
