use super::*;
use std::sync::Mutex as StdMutex;
use tempfile::TempDir;

fn open(dir: &TempDir, config: OutboxConfig) -> Outbox {
    Outbox::open(dir.path().join("outbox.db"), config).unwrap()
}

fn seqs(outbox: &Outbox) -> Vec<u64> {
    outbox.peek(usize::MAX).unwrap().into_iter().map(|e| e.seq).collect()
}

fn payloads(outbox: &Outbox) -> Vec<String> {
    outbox.peek(usize::MAX).unwrap().into_iter().map(|e| String::from_utf8(e.payload).unwrap()).collect()
}

#[test]
fn append_returns_increasing_seqs_and_peek_returns_entries_in_order() {
    let dir = TempDir::new().unwrap();
    let outbox = open(&dir, OutboxConfig::default());
    assert!(outbox.is_empty());
    let a = outbox.append("t/a", b"one").unwrap();
    let b = outbox.append("t/b", b"two").unwrap();
    assert!(b > a);
    assert_eq!(outbox.len(), 2);
    assert_eq!(outbox.bytes(), (3 + 3 + 3 + 3) as u64);
    let entries = outbox.peek(10).unwrap();
    assert_eq!(
        entries,
        vec![
            Entry { seq: a, topic: "t/a".into(), payload: b"one".to_vec() },
            Entry { seq: b, topic: "t/b".into(), payload: b"two".to_vec() },
        ]
    );
    assert_eq!(outbox.peek(1).unwrap().len(), 1, "peek returns at most n");
    assert_eq!(outbox.len(), 2, "peek removes nothing");
}

#[test]
fn ack_deletes_up_to_the_seq_and_seqs_are_never_reused() {
    let dir = TempDir::new().unwrap();
    let outbox = open(&dir, OutboxConfig::default());
    let seq: Vec<u64> = (0..3).map(|i| outbox.append("t", format!("{i}").as_bytes()).unwrap()).collect();
    assert_eq!(outbox.ack(seq[1]).unwrap(), 2);
    assert_eq!(seqs(&outbox), vec![seq[2]]);
    assert_eq!(outbox.ack(seq[1]).unwrap(), 0, "acking again is harmless");
    assert_eq!(outbox.ack(seq[2]).unwrap(), 1);
    assert!(outbox.is_empty());
    assert_eq!(outbox.bytes(), 0);
    drop(outbox);
    // After emptying and reopening, numbering continues.
    let outbox = open(&dir, OutboxConfig::default());
    assert!(outbox.append("t", b"x").unwrap() > seq[2]);
}

#[test]
fn entries_survive_closing_and_reopening() {
    let dir = TempDir::new().unwrap();
    let outbox = open(&dir, OutboxConfig::default());
    for i in 0..5 {
        outbox.append("dt/pump/T/telemetry", format!("{{\"n\":{i}}}").as_bytes()).unwrap();
    }
    outbox.ack(2).unwrap();
    drop(outbox);
    let outbox = open(&dir, OutboxConfig::default());
    assert_eq!(payloads(&outbox), vec![r#"{"n":2}"#, r#"{"n":3}"#, r#"{"n":4}"#]);
    assert_eq!((outbox.len(), outbox.bytes()), (3, 3 * (19 + 7)));
}

#[test]
fn row_bound_drops_the_oldest_and_counts_the_drops_durably() {
    let dir = TempDir::new().unwrap();
    let config = OutboxConfig { max_rows: Some(3), max_bytes: None };
    let outbox = open(&dir, config);
    for i in 0..5 {
        outbox.append("t", format!("{i}").as_bytes()).unwrap();
    }
    assert_eq!(payloads(&outbox), vec!["2", "3", "4"]);
    assert_eq!(outbox.dropped().unwrap(), 2);
    drop(outbox);
    let outbox = open(&dir, config);
    assert_eq!(outbox.dropped().unwrap(), 2);
    outbox.append("t", b"5").unwrap();
    assert_eq!((payloads(&outbox), outbox.dropped().unwrap()), (vec!["3".into(), "4".into(), "5".into()], 3));
}

#[test]
fn byte_bound_drops_as_many_oldest_entries_as_needed() {
    let dir = TempDir::new().unwrap();
    // Each entry is 1 topic byte + its payload.
    let outbox = open(&dir, OutboxConfig { max_rows: None, max_bytes: Some(20) });
    outbox.append("t", b"aaaa").unwrap(); // 5
    outbox.append("t", b"bbbb").unwrap(); // 10
    outbox.append("t", b"cccc").unwrap(); // 15
    outbox.append("t", b"dddddddddddd").unwrap(); // 13: 28 > 20, drop a and b → 18
    assert_eq!(payloads(&outbox), vec!["cccc", "dddddddddddd"]);
    assert_eq!((outbox.bytes(), outbox.dropped().unwrap()), (18, 2));
}

#[test]
fn an_entry_larger_than_the_byte_bound_is_refused_and_nothing_is_dropped() {
    let dir = TempDir::new().unwrap();
    let outbox = open(&dir, OutboxConfig { max_rows: None, max_bytes: Some(10) });
    outbox.append("t", b"keep").unwrap();
    let err = outbox.append("t", &[0u8; 10]).unwrap_err();
    assert!(matches!(err, OutboxError::TooLarge { bytes: 11, max: 10 }), "{err}");
    assert_eq!((payloads(&outbox), outbox.dropped().unwrap()), (vec!["keep".to_string()], 0));
}

#[test]
fn a_file_that_is_not_a_database_is_refused_and_left_untouched() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("outbox.db");
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&path, &garbage).unwrap();
    let err = Outbox::open(&path, OutboxConfig::default()).unwrap_err();
    assert!(matches!(err, OutboxError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("left untouched"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), garbage);
}

#[test]
fn another_applications_database_is_refused_and_left_untouched() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("outbox.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE things (name TEXT); INSERT INTO things VALUES ('pump');").unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let err = Outbox::open(&path, OutboxConfig::default()).unwrap_err();
    assert!(matches!(err, OutboxError::Foreign { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let conn = Connection::open(&path).unwrap();
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "delete", "the foreign file's journal mode was not changed");
}

#[test]
fn an_outbox_from_a_newer_schema_is_refused() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("outbox.db");
    drop(Outbox::open(&path, OutboxConfig::default()).unwrap());
    Connection::open(&path).unwrap().pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
    let err = Outbox::open(&path, OutboxConfig::default()).unwrap_err();
    assert!(matches!(err, OutboxError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1), "{err}");
}

#[test]
fn a_damaged_outbox_is_refused_and_left_untouched() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("outbox.db");
    {
        let outbox = Outbox::open(&path, OutboxConfig::default()).unwrap();
        for i in 0..400 {
            outbox
                .append("dt/pump/T/telemetry", format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(100)).as_bytes())
                .unwrap();
        }
        // Move everything from the WAL into the main file, so damage there is damage.
        let state = outbox.lock();
        state.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
    }
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 8 * 4096, "several pages were written");
    // Scribble over the third page onwards (page 1 holds the header, so the file still
    // looks like an outbox).
    for b in &mut bytes[2 * 4096..6 * 4096] {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = Outbox::open(&path, OutboxConfig::default()).unwrap_err();
    assert!(matches!(err, OutboxError::Corrupt { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

/// A publish function that records what it was given and fails as scripted.
#[derive(Clone, Default)]
struct Recorder {
    sent: Arc<StdMutex<Vec<(u64, String)>>>,
    attempts: Arc<StdMutex<Vec<tokio::time::Instant>>>,
    /// Results to return for the next attempts, front first; then `Ok`.
    script: Arc<StdMutex<Vec<Result<(), PublishError>>>>,
}

impl Recorder {
    fn scripted(script: Vec<Result<(), PublishError>>) -> Self {
        let r = Recorder::default();
        *r.script.lock().unwrap() = script;
        r
    }

    fn publish(&self) -> impl FnMut(Entry) -> std::future::Ready<Result<(), PublishError>> + '_ {
        move |entry| {
            self.attempts.lock().unwrap().push(tokio::time::Instant::now());
            let mut script = self.script.lock().unwrap();
            let result = if script.is_empty() { Ok(()) } else { script.remove(0) };
            if result.is_ok() {
                self.sent.lock().unwrap().push((entry.seq, String::from_utf8(entry.payload).unwrap()));
            }
            std::future::ready(result)
        }
    }

    fn sent(&self) -> Vec<(u64, String)> {
        self.sent.lock().unwrap().clone()
    }
}

fn fill(outbox: &Outbox, n: usize) {
    for i in 0..n {
        outbox.append("t", format!("m{i}").as_bytes()).unwrap();
    }
}

#[tokio::test]
async fn drain_publishes_in_seq_order_and_acks_each_entry() {
    let dir = TempDir::new().unwrap();
    let outbox = open(&dir, OutboxConfig::default());
    fill(&outbox, 5);
    let recorder = Recorder::default();
    let config = DrainConfig { batch: 2, ..Default::default() };
    let report = outbox.drain(&config, recorder.publish()).await.unwrap();
    assert_eq!(report, DrainReport { sent: 5, retries: 0 });
    let sent = recorder.sent();
    assert_eq!(sent.iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>(), ["m0", "m1", "m2", "m3", "m4"]);
    assert!(sent.windows(2).all(|w| w[0].0 < w[1].0), "seq order");
    assert!(outbox.is_empty(), "every published entry was acked");
}

#[tokio::test(start_paused = true)]
async fn drain_retries_a_retryable_failure_with_growing_pauses_before_sending_anything_later() {
    let dir = TempDir::new().unwrap();
    let outbox = open(&dir, OutboxConfig::default());
    fill(&outbox, 2);
    let busy = || Err(PublishError::Retryable("no connection".into()));
    let recorder = Recorder::scripted(vec![busy(), busy(), busy()]);
    let config =
        DrainConfig { batch: 10, initial_backoff: Duration::from_secs(1), max_backoff: Duration::from_secs(3) };
    let report = outbox.drain(&config, recorder.publish()).await.unwrap();
    assert_eq!(report, DrainReport { sent: 2, retries: 3 });
    assert_eq!(recorder.sent().iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>(), ["m0", "m1"]);
    let attempts = recorder.attempts.lock().unwrap().clone();
    let pauses: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(pauses[..3], [Duration::from_secs(1), Duration::from_secs(2), Duration::from_secs(3)]);
}

#[tokio::test]
async fn drain_stops_at_a_permanent_failure_and_keeps_the_entry() {
    let dir = TempDir::new().unwrap();
    let outbox = open(&dir, OutboxConfig::default());
    fill(&outbox, 3);
    let recorder = Recorder::scripted(vec![Ok(()), Err(PublishError::Permanent("not authorized".into()))]);
    let err = outbox.drain(&DrainConfig::default(), recorder.publish()).await.unwrap_err();
    let DrainError::Rejected { seq, reason, .. } = err else { panic!("{err}") };
    assert_eq!(reason, "not authorized");
    assert_eq!(seqs(&outbox)[0], seq, "the rejected entry is still first");
    assert_eq!(outbox.len(), 2);
}

#[tokio::test]
async fn a_restart_resends_entries_that_were_not_acked() {
    let dir = TempDir::new().unwrap();
    let outbox = open(&dir, OutboxConfig::default());
    fill(&outbox, 4);
    // The first drain publishes two entries, then the process "dies" mid-publish: the
    // drain future is dropped while the third publish is pending.
    let published = Arc::new(StdMutex::new(Vec::new()));
    let config = DrainConfig::default();
    let first = {
        let published = published.clone();
        outbox.drain(&config, move |entry: Entry| {
            let published = published.clone();
            async move {
                if published.lock().unwrap().len() == 2 {
                    std::future::pending::<()>().await;
                }
                published.lock().unwrap().push(entry.seq);
                Ok(())
            }
        })
    };
    // Polled once: the two ready publishes complete and are acked, the third hangs.
    assert!(futures::FutureExt::now_or_never(first).is_none(), "the drain hung as scripted");
    assert_eq!(published.lock().unwrap().len(), 2);
    drop(outbox);
    let outbox = open(&dir, OutboxConfig::default());
    let recorder = Recorder::default();
    outbox.drain(&DrainConfig::default(), recorder.publish()).await.unwrap();
    assert_eq!(recorder.sent().iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>(), ["m2", "m3"]);
    assert!(outbox.is_empty());
}

#[tokio::test]
async fn waiting_for_entries_wakes_on_append() {
    let dir = TempDir::new().unwrap();
    let outbox = open(&dir, OutboxConfig::default());
    let waiter = tokio::spawn({
        let outbox = outbox.clone();
        async move { outbox.wait_for_entries().await }
    });
    tokio::task::yield_now().await;
    outbox.append("t", b"x").unwrap();
    tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken by the append").unwrap();
    // With an entry waiting it returns at once.
    tokio::time::timeout(Duration::from_secs(5), outbox.wait_for_entries()).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_stop_lets_the_drain_send_what_waits_and_an_unreachable_cloud_keeps_it() {
    // Reachable: the drain's publish answers after 100 ms; the stop waits for it and its ack.
    let dir = TempDir::new().unwrap();
    let outbox = open(&dir, OutboxConfig::default());
    fill(&outbox, 3);
    let slow = {
        let outbox = outbox.clone();
        tokio::spawn(async move {
            outbox
                .drain(&DrainConfig::default(), |_| async {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok(())
                })
                .await
        })
    };
    outbox.stop_drain(slow, Duration::from_secs(2)).await;
    assert!(outbox.is_empty(), "every entry was sent and acknowledged before the stop");

    // Unreachable: the stop gives up after the grace and keeps every entry.
    fill(&outbox, 2);
    let stuck = {
        let outbox = outbox.clone();
        tokio::spawn(async move {
            outbox.drain(&DrainConfig::default(), |_| async { Err(PublishError::Retryable("offline".into())) }).await
        })
    };
    let started = tokio::time::Instant::now();
    outbox.stop_drain(stuck, Duration::from_secs(2)).await;
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(outbox.len(), 2, "nothing acknowledged is lost");
}
