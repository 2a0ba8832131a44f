//! Big files on S3: a file written in order goes to the store a run of 16
//! chunks (4 MiB) per object, not an object per 256 KiB chunk, and reads
//! back whole on another mount, cold, through overwrites inside a run,
//! appends and a truncation in the middle of one.
//!
//! The daemons talk to the local S3 server through a proxy that counts
//! requests: writing and reading the file must cost about one request per
//! run, where a request per chunk would be 65.

mod common;
use common::*;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

const MIB: usize = 1 << 20;

fn read_all(p: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    std::fs::File::open(p)
        .expect("open")
        .read_to_end(&mut out)
        .expect("read");
    out
}

/// Asserts `got` is `want`, naming the first byte that differs.
fn assert_same(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: {} bytes read, {} expected, first difference at {at:?}",
            got.len(),
            want.len()
        );
    }
}

#[test]
fn a_big_file_on_s3_goes_out_in_runs_and_reads_back_through_overwrites_and_truncation() {
    let moto = moto();
    let proxy = FaultProxy::start(moto.port, 1);
    // Every daemon this test starts talks to S3 through the counting proxy.
    std::env::set_var("AWS_ENDPOINT_URL", proxy.endpoint());
    let redis = RedisServer::start();
    let store = format!("s3://{S3_BUCKET}/big{:016x}", rand::random::<u64>());
    let t = tempfile::tempdir().expect("tempdir");
    let a = Mount::start(&store, t.path(), "a", Some(&redis.url()));
    let b = Mount::start(&store, t.path(), "b", Some(&redis.url()));
    let requests = || proxy.counts().0;

    // 16 MiB and a tail: four full runs, then a chunk and a piece.
    let mut model = trees::pattern(7, 16 * MIB + 300_000);
    let before = requests();
    {
        let mut f = std::fs::File::create(a.path("big")).expect("create");
        for piece in model.chunks(MIB) {
            f.write_all(piece).expect("write");
        }
        f.sync_all().expect("fsync");
    }
    let wrote = requests() - before;
    let before = requests();
    assert_same(&read_all(&b.path("big")), &model, "a cold read on b");
    let read = requests() - before;
    eprintln!("16.3 MiB: {wrote} requests to write, {read} to read cold");
    // Runs: 4 objects plus a record, intents and the tail chunk. A chunk
    // per object would be at least 65 on either side.
    assert!(wrote <= 30, "{wrote} requests to write 16.3 MiB");
    assert!(read <= 30, "{read} requests to read 16.3 MiB");

    // Overwrite across the boundary of two chunks inside run 1, on a.
    let patch = trees::pattern(8, 5000);
    let at = 5 * MIB - 2500;
    {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(a.path("big"))
            .expect("open");
        f.write_all_at(&patch, at as u64).expect("pwrite");
        f.sync_all().expect("fsync");
    }
    model[at..at + patch.len()].copy_from_slice(&patch);
    assert_same(&read_all(&b.path("big")), &model, "b after an overwrite");

    // Append 1.5 MiB (parked as it fills), then cut inside run 2.
    let tail = trees::pattern(9, 3 * MIB / 2);
    {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(a.path("big"))
            .expect("open");
        f.write_all(&tail).expect("append");
        f.sync_all().expect("fsync");
    }
    model.extend_from_slice(&tail);
    assert_same(&read_all(&b.path("big")), &model, "b after an append");
    let cut = 9 * MIB + 7;
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(a.path("big"))
            .expect("open");
        f.set_len(cut as u64).expect("truncate");
        // A write past the cut leaves a hole that reads as zeros.
        f.seek(SeekFrom::Start((cut + 100) as u64)).expect("seek");
        f.write_all(b"end").expect("write");
        f.sync_all().expect("fsync");
    }
    model.truncate(cut);
    model.extend_from_slice(&[0; 100]);
    model.extend_from_slice(b"end");
    assert_same(&read_all(&b.path("big")), &model, "b after a truncation");
    assert_same(&read_all(&a.path("big")), &model, "a itself");

    drop(a);
    drop(b);
    // A mount that never saw the file reads it from the store alone.
    let c = Mount::start(&store, t.path(), "c", Some(&redis.url()));
    assert_same(&read_all(&c.path("big")), &model, "a fresh mount");
    drop(c);
    assert_fsck_clean(&store, Some(&redis.url()));
}

/// fsx on S3 with writes of up to 8 MiB, so that most writes park whole
/// runs, and reads, overwrites, truncations, mmap and holes on top of
/// them, checked against fsx's model; `SOPFS_FSX_S3_OPS` sets how many.
#[test]
fn fsx_over_runs_on_s3_matches_the_model() {
    if !require("fsx") {
        return;
    }
    let ops: u32 = std::env::var("SOPFS_FSX_S3_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    let moto = moto();
    let redis = RedisServer::start();
    let store = format!("s3://{S3_BUCKET}/fsx{:016x}", rand::random::<u64>());
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("m");
    std::fs::create_dir(&dir).expect("mount point");
    // Straight to the server: the other test counts its proxy's requests.
    let endpoint = moto.endpoint();
    let env = [("AWS_ENDPOINT_URL", endpoint.as_str())];
    let m = Mount::start_env(&store, &dir, Some(&redis.url()), &[], &env);
    let config = "flen = 20971520\n[opsize]\nmax = 8388608\n[weights]\nposix_fallocate = 1\npunch_hole = 1\n";
    fsx(&m, "runs", config, ops);
    drop(m);
    assert_fsck_clean(&store, Some(&redis.url()));
}
