//! SIGKILL of the daemon in the middle of a write storm: the next mount
//! recovers the stale mount point, everything fsync'd is there byte for byte
//! (big files too, whose chunks went to the store ahead of the fsync), and
//! the volume's trees check out.

mod common;
use common::*;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Files whose fsync returned: (path in the mount, bytes).
type Journal = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

fn content(round: u32, i: u32) -> Vec<u8> {
    let mut len = 100 + ((i * 7919 + round * 104_729) % 300_000) as usize;
    if i % 8 == 7 {
        // Big enough that whole chunks go to the store before the fsync.
        len += 3 << 20;
    }
    (0..len).map(|j| (j as u32 ^ i ^ round) as u8).collect()
}

#[test]
fn sigkill_during_a_write_storm_loses_nothing_fsynced() {
    let t = tempfile::tempdir().expect("tempdir");
    let store = t.path().join("store");
    let store = store.to_str().expect("utf8").to_string();
    let dir = t.path().join("m");
    std::fs::create_dir(&dir).expect("mp");
    let durable: Journal = Arc::default();
    for round in 0..6u32 {
        let mut m = Mount::start_at(&store, &dir, None, &[]);
        let sub = m.path(&format!("r{round}"));
        std::fs::create_dir(&sub).expect("round dir");
        let stop = Arc::new(AtomicBool::new(false));
        // Writer 1: whole files, fsync'd, then recorded as durable.
        let (d1, s1, sub1) = (durable.clone(), stop.clone(), sub.clone());
        let synced = std::thread::spawn(move || {
            for i in 0.. {
                if s1.load(Ordering::Relaxed) {
                    return;
                }
                let name = format!("s{i}");
                let data = content(round, i);
                let r = (|| -> std::io::Result<()> {
                    let mut f = std::fs::File::create(sub1.join(&name))?;
                    f.write_all(&data)?;
                    f.sync_all()
                })();
                if r.is_err() {
                    return;
                }
                let rel = format!("r{round}/{name}");
                d1.lock().expect("journal").push((rel, data));
            }
        });
        // Writer 2: unsynced churn: rewrites in place, renames, deletes.
        let (s2, sub2) = (stop.clone(), sub.clone());
        let churn = std::thread::spawn(move || {
            for i in 0u64.. {
                if s2.load(Ordering::Relaxed) {
                    return;
                }
                let r = (|| -> std::io::Result<()> {
                    let p = sub2.join(format!("c{}", i % 7));
                    let f = std::fs::OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(&p)?;
                    f.write_all_at(&vec![i as u8; 70_000], (i % 5) * 50_000)?;
                    drop(f);
                    if i % 3 == 0 {
                        std::fs::rename(&p, sub2.join(format!("moved{}", i % 4)))?;
                    }
                    if i % 11 == 0 {
                        let _ = std::fs::remove_file(sub2.join(format!("moved{}", i % 4)));
                    }
                    Ok(())
                })();
                if r.is_err() {
                    return;
                }
            }
        });
        std::thread::sleep(Duration::from_millis(400 + 250 * round as u64));
        m.kill();
        stop.store(true, Ordering::Relaxed);
        synced.join().expect("synced writer");
        churn.join().expect("churn writer");
        assert!(
            is_mounted(&dir),
            "a killed daemon leaves its mount point behind"
        );
    }
    // The next mount recovers the stale mount point and finds every fsync'd file.
    let mut m = Mount::start_at(&store, &dir, None, &[]);
    let journal = durable.lock().expect("journal");
    assert!(
        journal.len() > 20,
        "too few fsync'd files to mean anything: {}",
        journal.len()
    );
    for (rel, data) in journal.iter() {
        let got = std::fs::read(m.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(
            got == *data,
            "{rel}: {} bytes, {} expected",
            got.len(),
            data.len()
        );
    }
    let status = m.unmount().expect("daemon");
    assert!(status.success(), "daemon exit: {status}");
    let out = Command::new(sopfs_bin())
        .args(["fsck", &store])
        .output()
        .expect("fsck");
    assert!(
        out.status.success(),
        "fsck: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{} fsync'd files verified", journal.len());
}
