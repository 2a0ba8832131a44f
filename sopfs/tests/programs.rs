//! Real programs on a real mount: git, sqlite3, tar, rsync, cp -a, make, and
//! the write-then-rename pattern editors and package managers rely on.

mod common;
use common::*;

fn mount() -> (tempfile::TempDir, Mount) {
    let t = tempfile::tempdir().expect("tempdir");
    let store = t.path().join("store");
    let m = Mount::start(store.to_str().expect("utf8"), t.path(), "m", None);
    (t, m)
}

#[test]
fn git_init_commit_clone_fsck() {
    if !require("git") {
        return;
    }
    let (_t, m) = mount();
    sh(
        &m.dir,
        r#"
        export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@t GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@t
        git init -q repo && cd repo
        for i in $(seq 1 50); do echo "line $i" > f$i.txt; done
        mkdir -p sub/deeper && echo nested > sub/deeper/n.txt
        git add -A && git commit -qm first
        for i in $(seq 1 20); do echo "more $i" >> f$i.txt; done
        git mv f50.txt sub/moved.txt
        git commit -qam second
        git gc -q
        git fsck --full --strict
        cd .. && git clone -q repo clone && cd clone
        git fsck --full --strict
        test "$(git rev-list --count HEAD)" = 2
        test "$(cat sub/moved.txt)" = "line 50"
        diff -r --exclude=.git ../repo .
        "#,
    );
}

#[test]
fn sqlite_transaction_integrity_and_wal() {
    if !require("sqlite3") {
        return;
    }
    let (_t, m) = mount();
    let out = sh(
        &m.dir,
        r#"
        sqlite3 db.sqlite "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);"
        { echo "BEGIN;"; for i in $(seq 1 5000); do echo "INSERT INTO t(v) VALUES('value $i');"; done; echo "COMMIT;"; } | sqlite3 db.sqlite
        sqlite3 db.sqlite "PRAGMA integrity_check;"
        sqlite3 db.sqlite "SELECT count(*) FROM t;"
        sqlite3 wal.sqlite "PRAGMA journal_mode=WAL;" >/dev/null
        sqlite3 wal.sqlite "CREATE TABLE w(x); BEGIN; WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<2000) INSERT INTO w SELECT i FROM c; COMMIT;"
        sqlite3 wal.sqlite "PRAGMA journal_mode;" "PRAGMA integrity_check;" "SELECT sum(x) FROM w;"
        "#,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["ok", "5000", "wal", "ok", "2001000"], "{out}");
}

#[test]
fn tar_round_trip_rsync_and_cp_keep_everything() {
    if !require("rsync") {
        return;
    }
    let (t, m) = mount();
    let src = t.path().join("src");
    std::fs::create_dir(&src).expect("src");
    // A tree with modes, times, symlinks, hard links, an empty dir and a sparse file.
    sh(
        &src,
        r#"
        mkdir -p a/b/c empty
        for i in $(seq 1 40); do head -c $((i * 997)) /dev/urandom > a/f$i; done
        head -c 3000000 /dev/urandom > a/b/big
        echo hi > a/b/c/x && chmod 0640 a/b/c/x && chmod 0750 a/b
        ln -s ../f1 a/b/rel && ln -s /etc/hostname abs
        ln a/f2 a/hard
        truncate -s 10M sparse && echo tail >> sparse
        touch -d '2001-02-03 04:05:06' a/f3
        "#,
    );
    let src_s = src.display();
    let mnt = m.dir.display();
    sh(
        &m.dir,
        &format!(
            r#"
            tar -C {src_s} -cf - . | tar -xpf - -C {mnt} --same-owner
            diff -r --no-dereference {src_s} {mnt}
            test "$(stat -c %a a/b/c/x)" = 640 && test "$(stat -c %a a/b)" = 750
            test "$(stat -c %Y a/f3)" = "$(stat -c %Y {src_s}/a/f3)"
            test "$(stat -c %h a/hard)" = 2 && test "$(stat -c %i a/hard)" = "$(stat -c %i a/f2)"
            test "$(readlink a/b/rel)" = ../f1
            mkdir tarball && tar -cf tarball/t.tar a abs sparse && mkdir out && tar -xf tarball/t.tar -C out
            diff -r --no-dereference a out/a
            rsync -a {src_s}/ rs/
            test -z "$(rsync -a --checksum --dry-run --itemize-changes {src_s}/ rs/)"
            cp -a rs cpa
            test "$(stat -c '%a %Y' cpa/a/f3)" = "$(stat -c '%a %Y' rs/a/f3)"
            test "$(readlink cpa/abs)" = /etc/hostname
            diff -r --no-dereference rs cpa
            "#
        ),
    );
}

#[test]
fn make_builds_a_c_program() {
    if !require("make") || !require("cc") {
        return;
    }
    let (_t, m) = mount();
    let out = sh(
        &m.dir,
        r#"
        mkdir proj && cd proj
        printf '#include "g.h"\nint main(void){ return greet(); }\n' > main.c
        printf 'int greet(void);\n' > g.h
        printf '#include <stdio.h>\n#include "g.h"\nint greet(void){ puts("hello from sopfs"); return 0; }\n' > g.c
        printf 'prog: main.o g.o\n\tcc -o prog main.o g.o\n%%.o: %%.c g.h\n\tcc -c -o $@ $<\nclean:\n\trm -f prog *.o\n' > Makefile
        make -s && ./prog
        sleep 1.1 && touch g.c && make | grep -c '^cc' && ./prog
        "#,
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["hello from sopfs", "2", "hello from sopfs"],
        "{out}"
    );
}

/// Readers never see a partial file while a writer replaces it by rename.
#[test]
fn write_then_rename_is_atomic_to_readers() {
    let (_t, m) = mount();
    let target = m.path("config.json");
    std::fs::write(&target, vec![b'0'; 50_000]).expect("seed");
    let reader_path = target.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let reader = std::thread::spawn(move || {
        let mut reads = 0;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let data = std::fs::read(&reader_path).expect("read");
            assert_eq!(data.len(), 50_000, "torn file seen");
            assert!(data.iter().all(|&b| b == data[0]), "mixed content seen");
            reads += 1;
        }
        reads
    });
    for i in 0..300u32 {
        let tmp = m.path(&format!(".config.json.{i}.tmp"));
        let byte = b'a' + (i % 26) as u8;
        std::fs::write(&tmp, vec![byte; 50_000]).expect("write tmp");
        std::fs::rename(&tmp, &target).expect("rename");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().expect("reader");
    assert!(reads > 0);
    let last = std::fs::read(&target).expect("final");
    assert!(last.iter().all(|&b| b == b'a' + (299 % 26) as u8));
    let names: Vec<_> = std::fs::read_dir(&m.dir).expect("ls").collect();
    assert_eq!(names.len(), 1, "temporary files left behind");
}

/// flock(1) and fcntl locks between processes of one host; `ls -l` of a big
/// directory (readdirplus) lists everything with the right sizes.
#[test]
fn locks_between_processes_and_ls_l() {
    let (_t, m) = mount();
    let out = sh(
        &m.dir,
        r#"
        touch lockfile
        flock lockfile sleep 2 &
        sleep 0.5
        if flock -n lockfile true; then echo "flock not exclusive"; exit 1; fi
        wait
        flock -n lockfile echo flock-free-again
        mkdir many && for i in $(seq 1 1500); do printf '%*s' $((i % 50)) > many/f$i; done
        ls -l many | tail -n +2 | wc -l
        ls -l many | awk '{s += $5} END {print s}'
        "#,
    );
    let expected: u64 = (1..=1500u64).map(|i| i % 50).sum();
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["flock-free-again", "1500", &expected.to_string()],
        "{out}"
    );
}

/// Files far beyond one chunk: a sequential 300 MiB file (which commits early
/// while it is written) and a sparse file with data at 5 GiB.
#[test]
fn big_and_sparse_files_read_back_exactly() {
    let (t, m) = mount();
    let local = t.path().join("big.local");
    sh(
        t.path(),
        &format!("head -c 314572800 /dev/urandom > {}", local.display()),
    );
    let out = sh(
        &m.dir,
        &format!(
            r#"
            dd if={l} of=big bs=1M status=none
            cmp {l} big && echo same
            dd if=/dev/urandom of=chunk bs=1k count=100 status=none
            dd if=chunk of=sparse bs=1k seek=5242880 conv=notrunc status=none
            stat -c %s sparse
            dd if=sparse bs=1k skip=5242880 status=none | cmp - chunk && echo tail-same
            dd if=sparse bs=1M count=3 skip=4000 status=none | tr -d '\0' | wc -c
            "#,
            l = local.display()
        ),
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "same",
            &(5_368_709_120u64 + 102_400).to_string(),
            "tail-same",
            "0"
        ],
        "{out}"
    );
}
