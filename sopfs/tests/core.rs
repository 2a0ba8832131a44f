//! The filesystem core driven directly, without a mount: two hosts (two `Fs`
//! on one store, coordinated by a real redis-server) and the merge rules.

mod common;
use common::RedisServer;
use engine::{Db, Options, RedisCoordinator, StoreLocation};
use sopfs::fs::{Caller, Fs, FsOptions, NodeSpec};
use sopfs::ns::schema::{Kind, ROOT_INO};
use std::sync::{Arc, Barrier};
use std::time::Duration;
use test_support::latency::LatencyStore;

const ROOT: Caller = Caller { uid: 0, gid: 0 };

fn host(store: &StoreLocation, redis: &str) -> Arc<Fs> {
    let coord = RedisCoordinator::connect(redis).expect("redis");
    let db = Db::open_shared(store.clone(), Options::default(), Arc::new(coord)).expect("open");
    Arc::new(Fs::new(db, FsOptions::default()).expect("fs"))
}

fn two_hosts() -> (RedisServer, Arc<Fs>, Arc<Fs>) {
    let redis = RedisServer::start();
    let store = StoreLocation::parse("memory://").expect("memory");
    let a = host(&store, &redis.url());
    let b = host(&store, &redis.url());
    (redis, a, b)
}

/// A store reached as S3 is (each request a round trip, here of no time):
/// where an `O_EXCL` create waits on its host until the file's first
/// commit.
fn remote_store() -> StoreLocation {
    StoreLocation::Custom(Arc::new(LatencyStore::in_memory(Duration::ZERO)))
}

/// Two hosts on [`remote_store`] and one redis-server.
fn two_remote_hosts() -> (RedisServer, Arc<Fs>, Arc<Fs>) {
    let redis = RedisServer::start();
    let store = remote_store();
    let a = host(&store, &redis.url());
    let b = host(&store, &redis.url());
    (redis, a, b)
}

#[test]
fn creates_in_one_directory_merge_instead_of_conflicting() {
    // Every store request takes 2 ms, so the two hosts' commits overlap
    // whatever the scheduler does (on a bare in-memory store one host could
    // make all its files before the other starts, and nothing would race).
    let redis = RedisServer::start();
    let slow = Arc::new(LatencyStore::in_memory(Duration::from_millis(2)));
    let store = StoreLocation::Custom(slow);
    let (a, b) = (host(&store, &redis.url()), host(&store, &redis.url()));
    let start = Arc::new(Barrier::new(2));
    let dir = a
        .make_node(ROOT, ROOT_INO, b"d", NodeSpec::new(Kind::Dir, 0o755))
        .expect("mkdir")
        .ino;
    let run = |fs: Arc<Fs>, tag: &'static str| {
        let start = start.clone();
        std::thread::spawn(move || {
            start.wait();
            for i in 0..100 {
                let name = format!("{tag}{i}");
                fs.make_node(ROOT, dir, name.as_bytes(), NodeSpec::new(Kind::File, 0o644))
                    .expect("create");
            }
            fs.db().stats()
        })
    };
    let (ha, hb) = (run(a.clone(), "a"), run(b.clone(), "b"));
    let (sa, sb) = (ha.join().expect("a"), hb.join().expect("b"));
    let fh = b.opendir(dir).expect("opendir");
    let mut names = Vec::new();
    b.readdir(fh, 0, |e, _| {
        names.push(e.name.clone());
        false
    })
    .expect("readdir");
    assert_eq!(names.len(), 202, "200 files plus . and ..");
    // The hosts raced on the same directory nodes; a key-level merge, not
    // retries, let them through: by the writer onto the records before its
    // own, or (records placed ahead) by every reader, melding.
    assert!(
        sa.merges + sb.merges + sa.melds + sb.melds > 0,
        "no merges: {sa:?} {sb:?}"
    );
    assert_eq!(sa.ahead_void + sb.ahead_void, 0, "{sa:?} {sb:?}");
    assert_eq!(sa.conflicts + sb.conflicts, 0, "{sa:?} {sb:?}");
    assert_eq!(a.check().expect("check"), (2, 200));
}

#[test]
fn disjoint_writes_to_one_file_from_two_hosts_both_land() {
    let (_redis, a, b) = two_hosts();
    let f = a
        .make_node(ROOT, ROOT_INO, b"f", NodeSpec::new(Kind::File, 0o644))
        .expect("create")
        .ino;
    let fa = a.open(f, libc::O_WRONLY).expect("open a");
    let fb = b.open(f, libc::O_WRONLY).expect("open b");
    a.write(fa, 0, &[b'a'; 1000]).expect("write a");
    b.write(fb, 600_000, &[b'b'; 1000]).expect("write b");
    b.write(fb, 2000, &[b'c'; 10]).expect("write b2");
    a.release(fa).expect("close a");
    b.release(fb).expect("close b");
    let data = a.read(f, 0, 700_000).expect("read");
    assert_eq!(data.len(), 601_000);
    assert!(data[..1000].iter().all(|&x| x == b'a'));
    assert!(data[2000..2010].iter().all(|&x| x == b'c'));
    assert!(data[600_000..].iter().all(|&x| x == b'b'));
    // Overlapping writes: the later commit wins whole.
    let fa = a.open(f, libc::O_WRONLY).expect("open a");
    let fb = b.open(f, libc::O_WRONLY).expect("open b");
    a.write(fa, 0, &[b'x'; 3000]).expect("write a");
    b.write(fb, 500, &[b'y'; 3000]).expect("write b");
    a.release(fa).expect("close a");
    b.release(fb).expect("close b");
    let data = b.read(f, 0, 4000).expect("read");
    assert!(data[..500].iter().all(|&x| x == b'x'));
    assert!(data[500..3500].iter().all(|&x| x == b'y'));
}

#[test]
fn crossing_directory_moves_never_make_a_loop() {
    let (_redis, a, b) = two_hosts();
    for round in 0..20 {
        let p = format!("p{round}");
        let q = format!("q{round}");
        let pi = a
            .make_node(
                ROOT,
                ROOT_INO,
                p.as_bytes(),
                NodeSpec::new(Kind::Dir, 0o755),
            )
            .expect("p")
            .ino;
        let qi = a
            .make_node(
                ROOT,
                ROOT_INO,
                q.as_bytes(),
                NodeSpec::new(Kind::Dir, 0o755),
            )
            .expect("q")
            .ino;
        // Host a moves p into q while host b moves q into p.
        let (a2, b2) = (a.clone(), b.clone());
        let (p2, q2) = (p.clone(), q.clone());
        let ta = std::thread::spawn(move || a2.rename(ROOT_INO, p2.as_bytes(), qi, b"p", 0));
        let tb = std::thread::spawn(move || b2.rename(ROOT_INO, q2.as_bytes(), pi, b"q", 0));
        let (ra, rb) = (ta.join().expect("a"), tb.join().expect("b"));
        assert!(
            ra.is_ok() != rb.is_ok(),
            "exactly one move may win: {ra:?} {rb:?}"
        );
        a.check().expect("tree stays a tree");
    }
}

#[test]
fn late_release_of_one_handle_does_not_publish_the_next_handles_half_line() {
    let (_redis, a, b) = two_hosts();
    let f = a
        .make_node(ROOT, ROOT_INO, b"log", NodeSpec::new(Kind::File, 0o644))
        .expect("create")
        .ino;
    let append = libc::O_WRONLY | libc::O_APPEND;
    // Line one through the first handle, closed: FUSE flush, RELEASE pending.
    let h1 = a.open(f, append).expect("open 1");
    a.write(h1, 0, b"a line 1\n").expect("write 1");
    a.flush_handle(h1).expect("flush 1");
    // The same process opens again and writes half of its next line...
    let h2 = a.open(f, append).expect("open 2");
    a.write(h2, 0, b"a li").expect("write 2a");
    // ...when the first handle's RELEASE arrives on another FUSE thread.
    a.release(h1).expect("release 1");
    // Another host appends a whole line meanwhile.
    let hb = b.open(f, append).expect("open b");
    b.write(hb, 0, b"b line 1\n").expect("write b");
    b.flush_handle(hb).expect("flush b");
    b.release(hb).expect("release b");
    a.write(h2, 0, b"ne 2\n").expect("write 2b");
    a.flush_handle(h2).expect("flush 2");
    a.release(h2).expect("release 2");
    let text = String::from_utf8(b.read(f, 0, 100).expect("read")).expect("utf8");
    assert_eq!(text, "a line 1\nb line 1\na line 2\n");
}

#[test]
fn a_big_write_goes_ahead_to_the_store_or_spills_and_lands_as_one_commit() {
    let redis = RedisServer::start();
    let store = StoreLocation::parse("memory://").expect("memory");
    let cache = tempfile::tempdir().expect("cache");
    let open = |cache_dir: std::path::PathBuf| {
        let coord = RedisCoordinator::connect(&redis.url()).expect("redis");
        // Small limits so that 24 MiB is "big": 1 MiB in memory per file,
        // 2 MiB of values in memory per transaction.
        let opts = Options {
            stage_bytes: 2 << 20,
            ..Options::default()
        };
        let db = Db::open_shared(store.clone(), opts, Arc::new(coord)).expect("open");
        let fs_opts = FsOptions {
            spill_bytes: 1 << 20,
            cache_dir,
            ..FsOptions::default()
        };
        Arc::new(Fs::new(db, fs_opts).expect("fs"))
    };
    let a = open(cache.path().to_path_buf());
    let b = open(cache.path().to_path_buf());
    let f = a
        .make_node(ROOT, ROOT_INO, b"big", NodeSpec::new(Kind::File, 0o644))
        .expect("create")
        .ino;
    // 24 MiB in 128 KiB pieces: first every other piece, so no chunk is
    // whole and the buffer must spill; then the rest, which completes the
    // chunks one by one, and they go to the store ahead of the commit.
    const PIECE: u64 = 128 << 10;
    let piece = |i: u64| -> Vec<u8> { (0..PIECE).map(|j| ((i * 7 + j) % 253) as u8).collect() };
    let h = a.open(f, libc::O_WRONLY).expect("open");
    for i in (0..192u64).step_by(2).chain((1..192u64).step_by(2)) {
        a.write(h, i * PIECE, &piece(i)).expect("write");
    }
    // Rewrite part of a chunk already in the store: it comes back to the buffer.
    a.write(h, (3 << 20) + 10, b"patched").expect("patch");
    // The writer reads its own buffer; the other host sees nothing yet.
    assert_eq!(a.read(f, (3 << 20) + 10, 7).expect("read a"), b"patched");
    assert_eq!(a.read(f, 5 << 20, 3).expect("read a"), &piece(40)[..3]);
    assert_eq!(b.getattr(f).expect("stat b").inode.size, 0);
    let before = a.db().stats().commits;
    a.flush_handle(h).expect("flush");
    a.release(h).expect("close");
    let mut want = Vec::new();
    for i in 0..192u64 {
        want.extend(piece(i));
    }
    want[(3 << 20) + 10..(3 << 20) + 17].copy_from_slice(b"patched");
    let got = b.read(f, 0, 24 << 20).expect("read b");
    assert!(got == want, "content differs");
    assert_eq!(
        a.db().stats().commits - before,
        1,
        "one commit for the whole file"
    );
    assert!(
        a.db().stats().stashed >= 90,
        "whole chunks went ahead to the store: {}",
        a.db().stats().stashed
    );

    // A cache folder that cannot take the spill fails the write, clearly, and
    // the committed content stays as it was.
    let c = open(cache.path().join("missing"));
    let h = c.open(f, libc::O_WRONLY).expect("open");
    let mut failed = None;
    for i in (0..40u64).step_by(2) {
        if let Err(e) = c.write(h, i * PIECE, &[1u8; PIECE as usize]) {
            failed = Some(e);
            break;
        }
    }
    let e = failed.expect("the spill should have failed");
    assert_eq!(e.errno(), libc::ENOENT, "{e}");
    drop(c);
    assert!(b.read(f, 0, 24 << 20).expect("read b") == want);
}

/// tar, `cp -p` and rsync write a file, then set its times, owner and mode,
/// then close it. Those changes ride with the writes' commit: this host sees
/// each at once, another host sees all of them with the content at the
/// close, and another process's change to the file is not held back.
#[test]
fn attribute_changes_of_the_writing_process_land_with_its_writes() {
    use sopfs::fs::SetAttr;
    use sopfs::ns::schema::Time;
    let (_redis, a, b) = two_hosts();
    let f = a
        .make_node(ROOT, ROOT_INO, b"f", NodeSpec::new(Kind::File, 0o600))
        .expect("create")
        .ino;
    let tar = Some(4242);
    let h = a.open(f, libc::O_WRONLY).expect("open");
    a.write_from(h, 0, b"content", tar).expect("write");
    let old = Time {
        secs: 1_000_000,
        nanos: 7,
    };
    let before = a.db().stats().commits;
    for set in [
        SetAttr {
            mtime: Some(old),
            by: tar,
            ..SetAttr::default()
        },
        SetAttr {
            uid: Some(12),
            gid: Some(34),
            by: tar,
            ..SetAttr::default()
        },
        SetAttr {
            mode: Some(0o644),
            by: tar,
            ..SetAttr::default()
        },
    ] {
        a.setattr(f, &set).expect("setattr");
    }
    assert_eq!(
        a.db().stats().commits,
        before,
        "nothing committed before the close"
    );
    let here = a.getattr(f).expect("stat on a").inode;
    assert_eq!(
        (here.perm, here.uid, here.gid, here.mtime),
        (0o644, 12, 34, old)
    );
    assert_eq!(here.size, 7);
    let there = b.getattr(f).expect("stat on b").inode;
    assert_eq!(
        (there.perm, there.size),
        (0o600, 0),
        "b sees the file as it was"
    );
    a.flush_handle(h).expect("close");
    a.release(h).expect("release");
    assert_eq!(
        a.db().stats().commits,
        before + 1,
        "content and attributes in one commit"
    );
    let there = b.getattr(f).expect("stat on b").inode;
    assert_eq!(
        (there.perm, there.uid, there.gid, there.mtime, there.size),
        (0o644, 12, 34, old, 7)
    );
    assert_eq!(b.read(f, 0, 100).expect("read"), b"content");

    // A write after the times were set moves mtime on again.
    let h = a.open(f, libc::O_WRONLY).expect("open");
    a.write_from(h, 0, b"x", tar).expect("write");
    a.setattr(
        f,
        &SetAttr {
            mtime: Some(old),
            by: tar,
            ..SetAttr::default()
        },
    )
    .expect("utimens");
    a.write_from(h, 1, b"y", tar).expect("write after");
    assert!(a.getattr(f).expect("stat").inode.mtime > old);

    // Another process's chmod commits at once, buffered writes with it.
    a.setattr(
        f,
        &SetAttr {
            mode: Some(0o640),
            by: Some(1),
            ..SetAttr::default()
        },
    )
    .expect("chmod by another process");
    let there = b.getattr(f).expect("stat on b").inode;
    assert_eq!(there.perm, 0o640);
    assert_eq!(b.read(f, 0, 100).expect("read"), b"xyntent");
    a.flush_handle(h).expect("close");
    a.release(h).expect("release");
    assert_eq!(a.check().expect("check"), (1, 1));
}

#[test]
fn a_create_without_o_excl_opens_the_file_another_host_just_made() {
    let (_redis, a, b) = two_hosts();
    let (made, fa) = a
        .create(
            ROOT,
            ROOT_INO,
            b"log",
            0o644,
            libc::O_WRONLY | libc::O_APPEND,
        )
        .expect("a creates");
    a.write(fa, 0, b"a1\n").expect("a writes");
    a.release(fa).expect("a closes");
    // b's kernel looked the name up before a's create landed: it asks to
    // create. Without O_EXCL that opens a's file; with it, EEXIST.
    let excl = b.create(
        ROOT,
        ROOT_INO,
        b"log",
        0o644,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
    );
    assert!(matches!(excl, Err(sopfs::FsError::Exists)), "{excl:?}");
    let (opened, fb) = b
        .create(
            ROOT,
            ROOT_INO,
            b"log",
            0o644,
            libc::O_WRONLY | libc::O_APPEND,
        )
        .expect("b opens the existing file");
    assert_eq!(opened.ino, made.ino);
    b.write(fb, 0, b"b1\n").expect("b appends");
    b.release(fb).expect("b closes");
    let attr = a.lookup(ROOT_INO, b"log").expect("lookup");
    let fh = a.open(attr.ino, libc::O_RDONLY).expect("open");
    assert_eq!(a.read(attr.ino, 0, 64).expect("read"), b"a1\nb1\n");
    a.release(fh).expect("close");
    // A directory of that name is not opened as a file.
    a.make_node(ROOT, ROOT_INO, b"d", NodeSpec::new(Kind::Dir, 0o755))
        .expect("mkdir");
    let dir = b.create(ROOT, ROOT_INO, b"d", 0o644, libc::O_WRONLY);
    assert!(matches!(dir, Err(sopfs::FsError::IsDir)), "{dir:?}");
}

const EXCL: i32 = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;

#[test]
fn threads_of_one_host_creating_in_one_directory_go_out_in_shared_records() {
    // On a store where a commit costs a round trip, the creates of one
    // host's threads that are ready together leave in one record (group
    // commit). Each create writes the host's stamp of the directory: with
    // one stamp key per host every group kept one create and sent the
    // others back, one file a record, and some writers starved.
    let redis = RedisServer::start();
    let slow = Arc::new(LatencyStore::in_memory(Duration::from_millis(10)));
    let store = StoreLocation::Custom(slow);
    let fs = host(&store, &redis.url());
    let dir = fs
        .make_node(ROOT, ROOT_INO, b"d", NodeSpec::new(Kind::Dir, 0o755))
        .expect("mkdir")
        .ino;
    let (threads, each) = (8, 25);
    let start = Arc::new(Barrier::new(threads));
    let seq_before = fs.db().seq();
    let stats_before = fs.db().stats();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (fs, start) = (fs.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for i in 0..each {
                    let name = format!("t{t}-{i}");
                    fs.make_node(ROOT, dir, name.as_bytes(), NodeSpec::new(Kind::File, 0o644))
                        .expect("create");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("writer");
    }
    let records = fs.db().seq() - seq_before;
    let stats = fs.db().stats();
    let files = (threads * each) as u64;
    // About 8 creates a record when they share one; one a record (200, plus
    // the retries' conflicts) when they do not.
    assert!(
        records <= files / 3,
        "{records} records for {files} creates; conflicts {}",
        stats.conflicts - stats_before.conflicts
    );
    assert_eq!(fs.check().expect("check"), (2, files));
}

#[test]
fn an_excl_create_lands_with_its_data_in_one_commit() {
    let (_redis, a, b) = two_remote_hosts();
    let before = a.db().stats().commits;
    let (made, fh) = a.create(ROOT, ROOT_INO, b"x", 0o640, EXCL).expect("create");
    a.write(fh, 0, b"hello").expect("write");
    // This host sees the file at once; another host at its close.
    assert_eq!(a.lookup(ROOT_INO, b"x").expect("lookup").ino, made.ino);
    assert_eq!(a.getattr(made.ino).expect("stat").inode.size, 5);
    assert_eq!(a.read(made.ino, 0, 64).expect("read"), b"hello");
    assert!(matches!(
        b.lookup(ROOT_INO, b"x"),
        Err(sopfs::FsError::NotFound)
    ));
    // A second O_EXCL create of the name on this host fails at once.
    let again = a.create(ROOT, ROOT_INO, b"x", 0o640, EXCL);
    assert!(matches!(again, Err(sopfs::FsError::Exists)), "{again:?}");
    a.flush_handle(fh).expect("close");
    a.release(fh).expect("release");
    // The second create committed the file with what it held then (its
    // name had to be settled before the create could be refused); the
    // close then had nothing left to commit.
    assert_eq!(a.db().stats().commits - before, 1);
    // Without the second create: exactly one commit per file.
    let before = a.db().stats().commits;
    for i in 0..10 {
        let name = format!("f{i}");
        let (f, fh) = a
            .create(ROOT, ROOT_INO, name.as_bytes(), 0o644, EXCL)
            .expect("create");
        // The kernel asks this before every write; it commits nothing.
        let cap = a.getxattr(f.ino, b"security.capability");
        assert!(matches!(cap, Err(sopfs::FsError::NoAttr)), "{cap:?}");
        a.write(fh, 0, name.as_bytes()).expect("write");
        a.flush_handle(fh).expect("close");
        a.release(fh).expect("release");
    }
    assert_eq!(a.db().stats().commits - before, 10);
    let on_b = b.lookup(ROOT_INO, b"x").expect("b sees x after the close");
    assert_eq!(on_b.ino, made.ino);
    assert_eq!(on_b.inode.perm, 0o640);
    let rh = b.open(on_b.ino, libc::O_RDONLY).expect("open");
    assert_eq!(b.read(on_b.ino, 0, 64).expect("read"), b"hello");
    b.release(rh).expect("close");
    assert_eq!(b.check().expect("check"), (1, 11));
}

#[test]
fn an_excl_create_on_a_local_store_shared_through_redis_commits_at_create() {
    // There a commit costs less than the claim in Redis a waiting create
    // would make (and release): the create commits at once, and the other
    // host sees the name and is refused it from then on.
    let (_redis, a, b) = two_hosts();
    let before = a.db().stats().commits;
    let (made, fh) = a.create(ROOT, ROOT_INO, b"x", 0o644, EXCL).expect("create");
    assert_eq!(a.db().stats().commits - before, 1, "the create committed");
    assert_eq!(b.lookup(ROOT_INO, b"x").expect("b sees it").ino, made.ino);
    let racing = b.create(ROOT, ROOT_INO, b"x", 0o644, EXCL);
    assert!(matches!(racing, Err(sopfs::FsError::Exists)), "{racing:?}");
    a.write(fh, 0, b"hello").expect("write");
    a.flush_handle(fh).expect("close");
    a.release(fh).expect("release");
    let rh = b.open(made.ino, libc::O_RDONLY).expect("open");
    assert_eq!(b.read(made.ino, 0, 64).expect("read"), b"hello");
    b.release(rh).expect("close");
}

#[test]
fn an_excl_create_of_a_name_another_host_is_creating_fails_at_once() {
    let (_redis, a, b) = two_remote_hosts();
    let (_, fa) = a
        .create(ROOT, ROOT_INO, b"lock", 0o644, EXCL)
        .expect("a creates");
    a.write(fa, 0, b"a holds it").expect("a writes");
    // a has not committed, but its claim is in Redis: b is refused now,
    // as a second process on a's host would be.
    let racing = b.create(ROOT, ROOT_INO, b"lock", 0o644, EXCL);
    assert!(matches!(racing, Err(sopfs::FsError::Exists)), "{racing:?}");
    a.flush_handle(fa).expect("a closes");
    a.release(fa).expect("a release");
    let after = b.create(ROOT, ROOT_INO, b"lock", 0o644, EXCL);
    assert!(matches!(after, Err(sopfs::FsError::Exists)), "{after:?}");
    // The claim went with a's commit: once the file is gone, b may take
    // the name at once.
    a.unlink(ROOT_INO, b"lock").expect("a unlinks");
    let (_, fb) = b
        .create(ROOT, ROOT_INO, b"lock", 0o644, EXCL)
        .expect("b takes it");
    b.flush_handle(fb).expect("b closes");
    b.release(fb).expect("b release");
}

#[test]
fn an_excl_create_that_another_host_beat_fails_at_close_and_loses_nothing_of_theirs() {
    // Two hosts whose claims never meet (each its own Redis, as after a
    // Redis that lost its keys): the store's rule decides at the commit.
    let (r1, r2) = (RedisServer::start(), RedisServer::start());
    let store = remote_store();
    let a = host(&store, &r1.url());
    let b = host(&store, &r2.url());
    let (_, fa) = a
        .create(ROOT, ROOT_INO, b"y", 0o644, EXCL)
        .expect("a creates");
    a.write(fa, 0, b"from a").expect("a writes");
    let (theirs, fb) = b
        .create(ROOT, ROOT_INO, b"y", 0o644, EXCL)
        .expect("b creates");
    b.write(fb, 0, b"from b").expect("b writes");
    b.flush_handle(fb).expect("b closes first");
    b.release(fb).expect("b release");
    let closed = a.flush_handle(fa);
    assert!(matches!(closed, Err(sopfs::FsError::Exists)), "{closed:?}");
    a.release(fa).expect("a release");
    let seen = a.lookup(ROOT_INO, b"y").expect("a sees b's file");
    assert_eq!(seen.ino, theirs.ino);
    let rh = a.open(seen.ino, libc::O_RDONLY).expect("open");
    assert_eq!(a.read(seen.ino, 0, 64).expect("read"), b"from b");
    a.release(rh).expect("close");

    // The same race found by another operation first (an unlink here):
    // it acts on b's file, and a's close still reports the loss.
    let (_, fa) = a
        .create(ROOT, ROOT_INO, b"z", 0o644, EXCL)
        .expect("a creates");
    a.write(fa, 0, b"from a").expect("a writes");
    let (_, fb) = b
        .create(ROOT, ROOT_INO, b"z", 0o644, EXCL)
        .expect("b creates");
    b.flush_handle(fb).expect("b closes");
    b.release(fb).expect("b release");
    a.unlink(ROOT_INO, b"z").expect("unlink meets b's file");
    let closed = a.flush_handle(fa);
    assert!(matches!(closed, Err(sopfs::FsError::Exists)), "{closed:?}");
    a.release(fa).expect("a release");
    // Gone from the store: a host opened now does not find it (b has no
    // Redis in common with a to learn of the unlink at once).
    let c = host(&store, &r2.url());
    assert!(matches!(
        c.lookup(ROOT_INO, b"z"),
        Err(sopfs::FsError::NotFound)
    ));
    assert_eq!(a.check().expect("check"), (1, 1));
}

#[test]
fn names_operations_meet_a_file_whose_create_waits_on_this_host() {
    let (_redis, a, b) = two_remote_hosts();
    let d = a
        .make_node(ROOT, ROOT_INO, b"d", NodeSpec::new(Kind::Dir, 0o755))
        .expect("mkdir")
        .ino;
    let (f, fh) = a.create(ROOT, d, b"new", 0o644, EXCL).expect("create");
    a.write(fh, 0, b"data").expect("write");
    // A listing shows it (and so commits it: b sees it too).
    let dh = a.opendir(d).expect("opendir");
    let mut names = Vec::new();
    a.readdir(dh, 0, |e, _| {
        names.push(e.name.clone());
        false
    })
    .expect("readdir");
    a.releasedir(dh);
    assert!(names.contains(&b"new".to_vec()), "{names:?}");
    assert_eq!(b.lookup(d, b"new").expect("b sees it").ino, f.ino);
    // Rename, link and rmdir of the directory of a waiting file.
    let (g, gh) = a.create(ROOT, d, b"g", 0o644, EXCL).expect("create g");
    a.write(gh, 0, b"gg").expect("write g");
    let rmdir = a.rmdir(ROOT_INO, b"d");
    assert!(matches!(rmdir, Err(sopfs::FsError::NotEmpty)), "{rmdir:?}");
    let (h, hh) = a.create(ROOT, d, b"h", 0o644, EXCL).expect("create h");
    a.rename(d, b"h", ROOT_INO, b"h2", 0).expect("rename");
    assert_eq!(b.lookup(ROOT_INO, b"h2").expect("b sees h2").ino, h.ino);
    let (k, kh) = a.create(ROOT, d, b"k", 0o644, EXCL).expect("create k");
    a.link(k.ino, ROOT_INO, b"k2").expect("link");
    assert_eq!(b.lookup(ROOT_INO, b"k2").expect("b sees k2").ino, k.ino);
    for h in [fh, gh, hh, kh] {
        a.flush_handle(h).expect("close");
        a.release(h).expect("release");
    }
    let rh = b.open(g.ino, libc::O_RDONLY).expect("open g");
    assert_eq!(b.read(g.ino, 0, 64).expect("read g"), b"gg");
    b.release(rh).expect("close");
    assert_eq!(a.check().expect("check"), (2, 5), "k has two names");
}
