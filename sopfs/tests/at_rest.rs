//! A volume formatted with compression and a key, through the CLI and a
//! real mount: nothing readable in the store, the key asked for on every
//! open, a wrong one refused with one line, and `status` and `fsck` at home.

mod common;
use common::*;
use std::process::Command;

const MARK: &str = "SECRET-PLAINTEXT-LINE";

fn sopfs(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(sopfs_bin());
    cmd.args(args)
        .env_remove("SOPFS_KEY")
        .env_remove("SOPFS_KEY_FILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run sopfs")
}

fn ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = sopfs(args, env);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn one_line_error(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = sopfs(args, env);
    assert!(!out.status.success(), "{args:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    err
}

/// Checks that no file under `root` holds the test's text; their count.
fn no_plaintext_under(root: &std::path::Path) -> usize {
    let all = files_under(root);
    for (p, _) in &all {
        let data = std::fs::read(p).expect("read");
        let hit = holds(&data, MARK.as_bytes()) || holds(&data, b"hidden-name");
        assert!(!hit, "{} holds plaintext", p.display());
    }
    all.len()
}

#[test]
fn an_encrypted_compressed_volume_mounts_only_with_its_key() {
    let t = tempfile::tempdir().expect("tempdir");
    let store_dir = t.path().join("store");
    let store = store_dir.to_str().expect("utf8");
    let key = t.path().join("key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").expect("key");
    let key = key.to_str().expect("utf8");
    let bad_key = t.path().join("bad-key");
    std::fs::write(&bad_key, "0123456789abcdef0123456789abcdeF\n").expect("key");
    let said = ok(
        &["format", store, "--compress", "zstd:5", "--key-file", key],
        &[],
    );
    assert!(said.contains("zstd level 5, encrypted"), "{said}");

    let lines: String = (0..20_000).map(|i| format!("{MARK} {i}\n")).collect();
    let noise: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mp = t.path().join("m");
    std::fs::create_dir(&mp).expect("mp");
    {
        let mut m = Mount::start_at(store, &mp, None, &[&format!("key_file={key}")]);
        std::fs::create_dir(m.path("hidden-name")).expect("mkdir");
        std::fs::write(m.path("hidden-name/log.txt"), &lines).expect("write");
        std::fs::write(m.path("noise.bin"), &noise).expect("write");
        for i in 0..50 {
            std::fs::write(
                m.path(&format!("hidden-name/small{i}")),
                format!("{MARK} {i}"),
            )
            .expect("small");
        }
        let status = ok(&["status", store], &[("SOPFS_KEY_FILE", key)]);
        assert!(status.contains("zstd level 5, encrypted"), "{status}");
        m.unmount();
    }
    assert!(no_plaintext_under(&store_dir) > 3);
    // Compressed: the text takes far less than it would as written.
    let stored: u64 = files_under(&store_dir).iter().map(|(_, n)| n).sum();
    eprintln!(
        "stored {stored} bytes for {} written",
        lines.len() + noise.len()
    );
    assert!(
        stored < (lines.len() / 2 + noise.len()) as u64,
        "stored {stored} bytes for {} written",
        lines.len() + noise.len()
    );

    // No key, a wrong key: one line each, and the mount point stays empty.
    let mp_s = mp.to_str().expect("utf8");
    let err = one_line_error(&["mount", store, mp_s], &[]);
    assert!(err.contains("is encrypted"), "{err}");
    let err = one_line_error(
        &[
            "mount",
            store,
            mp_s,
            "-o",
            &format!("key_file={}", bad_key.display()),
        ],
        &[],
    );
    assert!(err.contains("does not open"), "{err}");
    let err = one_line_error(&["status", store], &[]);
    assert!(err.contains("is encrypted"), "{err}");
    assert!(!is_mounted(&mp));

    // The key from the environment: everything reads back, and fsck
    // verifies every blob's checksum under the seal.
    let key_text = std::fs::read_to_string(key).expect("key");
    let mut m = Mount::start_env(store, &mp, None, &[], &[("SOPFS_KEY", key_text.trim())]);
    assert_eq!(
        std::fs::read_to_string(m.path("hidden-name/log.txt")).expect("read"),
        lines
    );
    assert_eq!(std::fs::read(m.path("noise.bin")).expect("read"), noise);
    // A random read inside a sealed chunk.
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(m.path("noise.bin")).expect("open");
    let mut buf = vec![0u8; 1000];
    f.read_exact_at(&mut buf, 1_234_567).expect("pread");
    assert_eq!(&buf[..], &noise[1_234_567..1_235_567]);
    drop(f);
    m.unmount();
    let fsck = ok(&["fsck", store], &[("SOPFS_KEY_FILE", key)]);
    assert!(
        fsck.contains("ok:") && fsck.contains(" 0 problem"),
        "{fsck}"
    );
}

#[test]
fn a_plain_volume_refuses_a_key_and_a_bad_setting_is_one_line() {
    let t = tempfile::tempdir().expect("tempdir");
    let store = t.path().join("store");
    let store = store.to_str().expect("utf8");
    let key = t.path().join("key");
    std::fs::write(&key, "0123456789abcdef0123").expect("key");
    let short = t.path().join("short");
    std::fs::write(&short, "tooshort").expect("key");
    ok(&["format", store], &[]);
    let err = one_line_error(
        &["status", store],
        &[("SOPFS_KEY_FILE", key.to_str().expect("utf8"))],
    );
    assert!(err.contains("not encrypted"), "{err}");
    let other = t.path().join("other");
    let other = other.to_str().expect("utf8");
    let err = one_line_error(&["format", other, "--compress", "lz4"], &[]);
    assert!(err.contains("zstd"), "{err}");
    let err = one_line_error(&["format", other, "--compress", "zstd:30"], &[]);
    assert!(err.contains("1 to 19"), "{err}");
    let err = one_line_error(
        &["format", other, "--key-file", short.to_str().expect("utf8")],
        &[],
    );
    assert!(err.contains("at least 16 bytes"), "{err}");
    assert!(
        !std::path::Path::new(other).join("volume").exists(),
        "nothing formatted"
    );
}

/// Two hosts on one encrypted, compressed S3 volume through Redis: each
/// writes, each reads the other's files, and no object in the bucket holds
/// the text.
#[test]
fn two_hosts_share_an_encrypted_volume_on_s3() {
    moto();
    let redis = RedisServer::start();
    let prefix = format!("sealed{:016x}", rand::random::<u64>());
    let store = format!("s3://{S3_BUCKET}/{prefix}");
    let t = tempfile::tempdir().expect("tempdir");
    let key = t.path().join("key");
    std::fs::write(&key, "an S3 volume key, long enough\n").expect("key");
    let key = key.to_str().expect("utf8");
    let said = ok(
        &[
            "format",
            &store,
            "--redis",
            &redis.url(),
            "--compress",
            "zstd",
            "--key-file",
            key,
        ],
        &[],
    );
    assert!(said.contains("zstd level 3, encrypted"), "{said}");
    let opt = format!("key_file={key}");
    let (da, db) = (t.path().join("a"), t.path().join("b"));
    std::fs::create_dir(&da).expect("a");
    std::fs::create_dir(&db).expect("b");
    let mut a = Mount::start_at(&store, &da, Some(&redis.url()), &[&opt]);
    let mut b = Mount::start_at(&store, &db, Some(&redis.url()), &[&opt]);
    std::fs::create_dir(a.path("hidden-name")).expect("mkdir");
    let big: String = (0..60_000).map(|i| format!("{MARK} {i}\n")).collect();
    for i in 0..20 {
        std::fs::write(
            a.path(&format!("hidden-name/a{i}")),
            format!("{MARK} a {i}"),
        )
        .expect("a");
        std::fs::write(b.path(&format!("b{i}")), format!("{MARK} b {i}")).expect("b");
    }
    std::fs::write(a.path("hidden-name/big.txt"), &big).expect("big");
    for i in 0..20 {
        assert_eq!(
            std::fs::read_to_string(b.path(&format!("hidden-name/a{i}"))).expect("b reads a"),
            format!("{MARK} a {i}")
        );
        assert_eq!(
            std::fs::read_to_string(a.path(&format!("b{i}"))).expect("a reads b"),
            format!("{MARK} b {i}")
        );
    }
    assert_eq!(
        std::fs::read_to_string(b.path("hidden-name/big.txt")).expect("big"),
        big
    );
    a.unmount();
    b.unmount();
    // Every object of the volume, read straight from the bucket.
    let objects = stored_objects(&store);
    assert!(objects.len() > 5, "{} objects", objects.len());
    for (name, body) in &objects {
        assert!(
            !holds(body, MARK.as_bytes()) && !holds(body, b"hidden-name"),
            "{name} holds plaintext"
        );
    }
}

/// (name, body) of every object of the volume at `store`, as stored (a
/// store opened without the volume's marker read does not unseal).
fn stored_objects(store: &str) -> Vec<(String, Vec<u8>)> {
    let location = engine::StoreLocation::parse(store).expect("location");
    let raw = engine::BlobStore::open(&location).expect("store");
    raw.list("")
        .expect("list")
        .into_iter()
        .map(|m| {
            let body = raw.get(&m.location).expect("get").expect("there");
            (m.location.to_string(), body.to_vec())
        })
        .collect()
}
