//! Transfers from a real HTTP server on loopback (testkit's origin): in
//! parallel, resumed from the journal, and through each fault the server
//! can inject.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use testkit::origin::{Faults, Origin};
use transfer::source::HttpOptions;
use transfer::{
    fetch, journal_path, Expected, HttpSource, HubLocation, Options, Source, TransferError,
};
use types::NoProgress;

const MIB: u64 = 1 << 20;

/// A file of `size` pseudo-random bytes under `dir/path`, and its SHA-256.
fn object(dir: &Path, path: &str, size: u64, seed: u64) -> String {
    let mut x = seed | 1;
    let bytes: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let full = dir.join(path);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(full, &bytes).unwrap();
    hex::encode(Sha256::digest(&bytes))
}

fn options(connections: usize) -> Options {
    Options {
        connections,
        chunk_size: MIB,
        retries: 2,
        backoff: Duration::from_millis(20),
        limit_rate: None,
        staging: None,
    }
}

fn http(url: &str) -> HttpSource {
    HttpSource::new(
        url,
        &HttpOptions {
            stall: Duration::from_secs(2),
            ..HttpOptions::default()
        },
    )
    .unwrap()
}

struct Setup {
    _served: tempfile::TempDir,
    work: tempfile::TempDir,
    origin: Origin,
    sha: String,
}

fn setup(size: u64) -> Setup {
    let served = tempfile::tempdir().unwrap();
    let sha = object(served.path(), "m.gguf", size, 7);
    Setup {
        origin: Origin::start(served.path()),
        _served: served,
        work: tempfile::tempdir().unwrap(),
        sha,
    }
}

impl Setup {
    fn partial(&self) -> PathBuf {
        self.work.path().join("m.partial")
    }
}

#[test]
fn four_connections_fetch_every_chunk_once_and_hash_it() {
    let s = setup(8 * MIB + 123);
    let got = fetch(
        &http(&s.origin.url("m.gguf")),
        &s.partial(),
        &Expected::default(),
        &options(4),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(got.sha256, s.sha);
    assert_eq!(got.size, 8 * MIB + 123);
    assert_eq!(got.chunks.len(), 9);
    assert_eq!(got.chunks[8].length, 123);
    let log = s.origin.log();
    // The probe asks for one byte; then each chunk once.
    assert_eq!(log.len(), 10, "{log:?}");
    assert_eq!(s.origin.sent("m.gguf"), 8 * MIB + 123 + 1);
    assert!(log.iter().all(|a| a.status == 206));
    let bytes = std::fs::read(s.partial()).unwrap();
    assert_eq!(hex::encode(Sha256::digest(&bytes)), s.sha);
}

#[test]
fn an_interrupted_transfer_resumes_from_its_journal() {
    let s = setup(8 * MIB);
    // One connection, so chunks go in order: three arrive, the fourth's
    // connection drops, and with no retries the transfer stops there.
    s.origin.set_faults(Faults {
        drop_skip: 3,
        drop_times: 1,
        drop_after: 100_000,
        ..Faults::default()
    });
    let mut once = options(1);
    once.retries = 0;
    let err = fetch(
        &http(&s.origin.url("m.gguf")),
        &s.partial(),
        &Expected::default(),
        &once,
        &NoProgress,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            TransferError::Connection { .. } | TransferError::Truncated { .. }
        ),
        "{err}"
    );
    assert!(journal_path(&s.partial()).exists());
    s.origin.clear_log();
    let got = fetch(
        &http(&s.origin.url("m.gguf")),
        &s.partial(),
        &Expected::default(),
        &options(2),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(got.sha256, s.sha);
    assert_eq!(got.resumed_chunks, 3);
    assert_eq!(got.received_bytes, 5 * MIB);
    let log = s.origin.log();
    assert!(
        log.iter()
            .all(|a| a.start == 0 && a.end == 1 || a.start >= 3 * MIB),
        "{log:?}"
    );
}

#[test]
fn a_changed_object_is_fetched_again_from_the_start() {
    let s = setup(4 * MIB);
    s.origin.set_faults(Faults {
        drop_skip: 2,
        drop_times: 1,
        drop_after: 1000,
        ..Faults::default()
    });
    let mut once = options(1);
    once.retries = 0;
    fetch(
        &http(&s.origin.url("m.gguf")),
        &s.partial(),
        &Expected::default(),
        &once,
        &NoProgress,
    )
    .unwrap_err();
    // The publisher replaces the file: the journal's chunks are of the old.
    let sha = object(s._served.path(), "m.gguf", 4 * MIB, 99);
    let got = fetch(
        &http(&s.origin.url("m.gguf")),
        &s.partial(),
        &Expected::default(),
        &options(2),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(got.resumed_chunks, 0);
    assert_eq!(got.sha256, sha);
}

#[test]
fn transient_faults_are_retried_and_persistent_ones_are_named() {
    let s = setup(3 * MIB);
    let source = http(&s.origin.url("m.gguf"));
    let run = |faults: Faults| {
        s.origin.set_faults(faults);
        let _ = std::fs::remove_file(s.partial());
        let _ = std::fs::remove_file(journal_path(&s.partial()));
        fetch(
            &source,
            &s.partial(),
            &Expected::default(),
            &options(2),
            &NoProgress,
        )
    };
    // Within the retries: the transfer succeeds.
    for faults in [
        Faults {
            status_500: 2,
            ..Faults::default()
        },
        Faults {
            drop_times: 2,
            drop_after: 5000,
            ..Faults::default()
        },
    ] {
        assert_eq!(run(faults.clone()).unwrap().sha256, s.sha, "{faults:?}");
    }
    // Beyond them: the error says what happened.
    let err = run(Faults {
        status_500: 100,
        ..Faults::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("HTTP 500"), "{err}");
    let err = run(Faults {
        stall_after: Some(10_000),
        ..Faults::default()
    })
    .unwrap_err();
    assert!(
        matches!(err, TransferError::Stalled { secs: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("stalled"), "{err}");
    // A server that ignores ranges is read whole, over one connection.
    s.origin.clear_log();
    let got = run(Faults {
        ignore_range: true,
        ..Faults::default()
    })
    .unwrap();
    assert_eq!(got.sha256, s.sha);
    assert!(s.origin.log().iter().all(|a| a.status == 200));
}

#[test]
fn wrong_bytes_fail_a_known_chunk_or_the_published_digest() {
    let s = setup(3 * MIB);
    let source = http(&s.origin.url("m.gguf"));
    let good = fetch(
        &source,
        &s.partial(),
        &Expected::default(),
        &options(1),
        &NoProgress,
    )
    .unwrap();
    // Known chunks (a repair): the flipped chunk is retried, then named.
    std::fs::remove_file(s.partial()).unwrap();
    std::fs::remove_file(journal_path(&s.partial())).unwrap();
    s.origin.set_faults(Faults {
        wrong_bytes: 100,
        ..Faults::default()
    });
    let known = Expected {
        chunks: good.chunks.clone(),
        ..Expected::default()
    };
    let err = fetch(&source, &s.partial(), &known, &options(1), &NoProgress).unwrap_err();
    assert!(
        matches!(err, TransferError::ChunkMismatch { offset: 0, .. }),
        "{err}"
    );
    // Once: the retry gets the right bytes.
    s.origin.set_faults(Faults {
        wrong_bytes: 1,
        ..Faults::default()
    });
    assert_eq!(
        fetch(&source, &s.partial(), &known, &options(1), &NoProgress)
            .unwrap()
            .sha256,
        s.sha
    );
    // Only a whole digest: the mismatch is found at the end, and nothing
    // of the transfer is kept.
    std::fs::remove_file(s.partial()).unwrap();
    std::fs::remove_file(journal_path(&s.partial())).unwrap();
    s.origin.set_faults(Faults {
        wrong_bytes: 1,
        ..Faults::default()
    });
    let digest = Expected {
        sha256: Some(s.sha.clone()),
        ..Expected::default()
    };
    let err = fetch(&source, &s.partial(), &digest, &options(2), &NoProgress).unwrap_err();
    assert!(
        matches!(err, TransferError::ChecksumMismatch { .. }),
        "{err}"
    );
    assert!(!s.partial().exists() && !journal_path(&s.partial()).exists());
    assert_eq!(
        fetch(&source, &s.partial(), &digest, &options(2), &NoProgress)
            .unwrap()
            .sha256,
        s.sha
    );
}

#[test]
fn a_hub_file_is_verified_against_its_linked_etag() {
    let served = tempfile::tempdir().unwrap();
    let sha = object(served.path(), "org/repo/model-Q4.gguf", 2 * MIB + 5, 3);
    let origin = Origin::start(served.path());
    let work = tempfile::tempdir().unwrap();
    let partial = work.path().join("p");
    let location = HubLocation::parse("hf://org/repo/model-Q4.gguf").unwrap();
    let source = HttpSource::hub(&location, &origin.base, &HttpOptions::default()).unwrap();
    let remote = source.probe().unwrap();
    assert_eq!(remote.sha256.as_deref(), Some(sha.as_str()));
    assert_eq!(remote.size, Some(2 * MIB + 5));
    assert!(remote.ranges);
    let got = fetch(
        &source,
        &partial,
        &Expected::default(),
        &options(2),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(got.sha256, sha);
    // Bytes that do not match the hub's digest are refused.
    std::fs::remove_file(&partial).unwrap();
    std::fs::remove_file(journal_path(&partial)).unwrap();
    origin.set_faults(Faults {
        wrong_bytes: 1,
        ..Faults::default()
    });
    let err = fetch(
        &source,
        &partial,
        &Expected::default(),
        &options(2),
        &NoProgress,
    )
    .unwrap_err();
    assert!(
        matches!(err, TransferError::ChecksumMismatch { .. }),
        "{err}"
    );
    // A file the hub lacks is a 404, not retried.
    let missing = HttpSource::hub(
        &HubLocation::parse("hf://org/repo/none.gguf").unwrap(),
        &origin.base,
        &HttpOptions::default(),
    )
    .unwrap();
    let err = fetch(
        &missing,
        &partial,
        &Expected::default(),
        &options(2),
        &NoProgress,
    )
    .unwrap_err();
    assert!(
        matches!(err, TransferError::Status { status: 404, .. }),
        "{err}"
    );
}

#[test]
fn a_rate_cap_holds_the_average() {
    let s = setup(2 * MIB);
    let mut capped = options(4);
    capped.limit_rate = Some(4 * MIB);
    let started = std::time::Instant::now();
    let got = fetch(
        &http(&s.origin.url("m.gguf")),
        &s.partial(),
        &Expected::default(),
        &capped,
        &NoProgress,
    )
    .unwrap();
    assert_eq!(got.sha256, s.sha);
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
}
