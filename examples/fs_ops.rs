//! The filesystem core without a mount: the calls the kernel makes for
//! `create + write 4 KiB + close`, `stat`, `read`, `unlink`, timed per phase.
//! Isolates sopfs's own cost from FUSE round trips, for profiling
//! (`perf record`, `valgrind --tool=callgrind`).
//!
//! ```sh
//! cargo run --release -p sopfs --example fs_ops -- [--store memory://|PATH] [--files N] [--size BYTES]
//! ```

use engine::{Db, Options, StoreLocation};
use sopfs::fs::{Caller, Fs, FsOptions, NodeSpec};
use sopfs::ns::schema::{Kind, ROOT_INO};
use std::time::Instant;

const ROOT: Caller = Caller { uid: 0, gid: 0 };

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn phase(name: &str, n: usize, f: impl FnMut(usize)) {
    let t = Instant::now();
    (0..n).for_each(f);
    let s = t.elapsed().as_secs_f64();
    println!(
        "{name:<28} {:>10.0} ops/s {:>8.1} us/op",
        n as f64 / s,
        s * 1e6 / n as f64
    );
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let store = arg(&args, "--store", "memory://");
    let n: usize = arg(&args, "--files", "20000").parse()?;
    let size: usize = arg(&args, "--size", "4096").parse()?;
    let db = Db::open(StoreLocation::parse(&store)?, Options::default())?;
    let fs = Fs::new(db, FsOptions::default())?;
    let dir = fs
        .make_node(ROOT, ROOT_INO, b"bench", NodeSpec::new(Kind::Dir, 0o755))?
        .ino;
    let name = |i: usize| format!("f{i}").into_bytes();
    let data = vec![b'x'; size];
    let mut inos = vec![0u64; n];
    phase("create+write+close", n, |i| {
        // The kernel's sequence: a negative lookup, create, write, flush, release.
        let _ = fs.lookup(dir, &name(i));
        let (attr, fh) = fs
            .create(ROOT, dir, &name(i), 0o644, libc::O_WRONLY)
            .expect("create");
        fs.remember(attr.ino);
        if size > 0 {
            fs.write(fh, 0, &data).expect("write");
        }
        fs.flush_handle(fh).expect("flush");
        fs.release(fh).expect("release");
        inos[i] = attr.ino;
    });
    phase("lookup+getattr", n, |i| {
        let a = fs.lookup(dir, &name(i)).expect("lookup");
        fs.getattr(a.ino).expect("getattr");
    });
    phase("open+read+close", n, |i| {
        let fh = fs.open(inos[i], libc::O_RDONLY).expect("open");
        let got = fs.read(inos[i], 0, 65536).expect("read");
        assert_eq!(got.len(), size);
        fs.flush_handle(fh).expect("flush");
        fs.release(fh).expect("release");
    });
    phase("unlink", n, |i| {
        fs.unlink(dir, &name(i)).expect("unlink");
        fs.forget(inos[i], 1);
        // The daemon's reaper runs every 20 ms; about that many unlinks.
        if i % 64 == 63 {
            fs.reap_forgotten();
        }
    });
    fs.reap_forgotten();
    let s = fs.db().stats();
    println!(
        "commits {} merges {} conflicts {}",
        s.commits, s.merges, s.conflicts
    );
    Ok(())
}
