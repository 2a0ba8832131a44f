//! The namespace without a mount: transaction functions on an in-memory volume.

use super::schema::*;
use super::{content, dirs, names, paths, Caller, Detached, Host, NodeSpec};
use crate::error::{FsError, FsResult};
use engine::{Db, Options, StoreLocation, Transaction};

const ME: Detached = Detached { id: 7 };
const ROOT: Caller = Caller { uid: 0, gid: 0 };

fn volume() -> Db {
    let db = Db::open(
        StoreLocation::Memory(Default::default()),
        Options::default(),
    )
    .expect("open");
    db.run_with(|tx| format(tx, 0, 0)).expect("format");
    db
}

fn run<T>(db: &Db, f: impl FnMut(&mut Transaction) -> FsResult<T>) -> FsResult<T> {
    db.run_with(f)
}

/// A host where every inode is still open.
struct Holding;

impl Host for Holding {
    fn id(&self) -> u64 {
        8
    }
    fn in_use(&self, _ino: u64) -> bool {
        true
    }
}

#[test]
fn files_written_by_path_read_back_across_chunks() {
    let db = volume();
    let data: Vec<u8> = (0..CHUNK as usize * 2 + 777)
        .map(|i| (i % 251) as u8)
        .collect();
    run(&db, |tx| {
        names::make_node(
            tx,
            &ME,
            ROOT,
            ROOT_INO,
            b"d",
            NodeSpec::new(Kind::Dir, 0o755),
        )?;
        paths::write_file(tx, &ME, ROOT, "/d/f", &data, false)?;
        paths::write_file(tx, &ME, ROOT, "/d/f", b"tail", true)
    })
    .expect("write");
    let back = run(&db, |tx| {
        let ino = paths::resolve(tx, "/d/f")?;
        content::read_file(tx, ino)
    })
    .expect("read");
    assert_eq!(back.len(), data.len() + 4);
    assert_eq!(&back[..data.len()], &data[..]);
    assert_eq!(&back[data.len()..], b"tail");
}

#[test]
fn rename_over_a_file_and_rmdir_of_a_full_directory() {
    let db = volume();
    run(&db, |tx| {
        paths::write_file(tx, &ME, ROOT, "/a", b"a", false)?;
        paths::write_file(tx, &ME, ROOT, "/b", b"b", false)?;
        names::make_node(
            tx,
            &ME,
            ROOT,
            ROOT_INO,
            b"d",
            NodeSpec::new(Kind::Dir, 0o755),
        )?;
        paths::write_file(tx, &ME, ROOT, "/d/x", b"x", false)
    })
    .expect("setup");
    let replaced = run(&db, |tx| {
        names::rename(tx, &ME, ROOT_INO, b"a", ROOT_INO, b"b", 0)
    })
    .expect("rename");
    assert!(replaced.is_some(), "the old /b is reported as replaced");
    let (a, b) = run(&db, |tx| {
        let a = paths::resolve(tx, "/a").err();
        let ino = paths::resolve(tx, "/b")?;
        Ok((a, content::read_file(tx, ino)?))
    })
    .expect("read");
    assert!(matches!(a, Some(FsError::NotFound)));
    assert_eq!(b, b"a");
    let full = run(&db, |tx| names::rmdir(tx, &ME, ROOT_INO, b"d"));
    assert!(matches!(full, Err(FsError::NotEmpty)), "{full:?}");
    let exists = run(&db, |tx| {
        names::make_node(
            tx,
            &ME,
            ROOT,
            ROOT_INO,
            b"d",
            NodeSpec::new(Kind::File, 0o644),
        )
    });
    assert!(matches!(exists, Err(FsError::Exists)), "{exists:?}");
}

#[test]
fn the_last_unlink_of_a_file_in_use_keeps_its_inode() {
    let db = volume();
    let ino = run(&db, |tx| {
        paths::write_file(tx, &ME, ROOT, "/held", b"x", false)?;
        paths::write_file(tx, &ME, ROOT, "/free", b"y", false)?;
        paths::resolve(tx, "/held")
    })
    .expect("setup");
    let free = run(&db, |tx| paths::resolve(tx, "/free")).expect("free");
    run(&db, |tx| names::unlink(tx, &Holding, ROOT_INO, b"held")).expect("unlink held");
    run(&db, |tx| names::unlink(tx, &ME, ROOT_INO, b"free")).expect("unlink free");
    let (held, gone) = run(&db, |tx| Ok((load(tx, ino)?, load(tx, free).err()))).expect("load");
    assert_eq!(held.nlink, 0, "kept for its user, with no name");
    assert!(matches!(gone, Some(FsError::NotFound)));
}

#[test]
fn hosts_stamp_one_directory_apart_and_stat_folds_them() {
    let db = volume();
    run(&db, |tx| {
        names::make_node(
            tx,
            &ME,
            ROOT,
            ROOT_INO,
            b"p",
            NodeSpec::new(Kind::Dir, 0o755),
        )?;
        let p = paths::resolve(tx, "/p")?;
        names::make_node(tx, &ME, ROOT, p, b"a", NodeSpec::new(Kind::Dir, 0o755))?;
        names::make_node(tx, &Holding, ROOT, p, b"b", NodeSpec::new(Kind::Dir, 0o755))
    })
    .expect("mkdirs");
    let (stamps, attr, listed) = run(&db, |tx| {
        let p = paths::resolve(tx, "/p")?;
        let mut stamps = 0;
        let mut cur = engine::Cursor::prefix(STAMP_PREFIX, engine::Direction::Forward);
        stamps += tx.scan(&dir_tree(p), &mut cur, 16)?.len();
        let listed = paths::list(tx, &ME, p, None, None, 10)?;
        Ok((stamps, dirs::attr(tx, &ME, p)?, listed.len()))
    })
    .expect("stat");
    assert_eq!(stamps, 2, "one stamp per host");
    assert_eq!(attr.inode.nlink, 4, "two subdirectories: 2 + 2");
    assert_eq!(listed, 2);
    let (dirs_seen, files) = run(&db, paths::check).expect("check");
    assert_eq!((dirs_seen, files), (4, 0));
}

#[test]
fn a_subdirectory_moved_out_by_another_host_leaves_its_old_parent_at_two_links() {
    // Host 7's stamp sorts before host 8's: its removal of the subdirectory
    // host 8 added is folded first. The sum is what counts, not the order
    // (each lane of a host is a stamp of its own too).
    let db = volume();
    run(&db, |tx| {
        for d in [&b"p"[..], b"q"] {
            names::make_node(
                tx,
                &Holding,
                ROOT,
                ROOT_INO,
                d,
                NodeSpec::new(Kind::Dir, 0o755),
            )?;
        }
        let p = paths::resolve(tx, "/p")?;
        names::make_node(tx, &Holding, ROOT, p, b"a", NodeSpec::new(Kind::Dir, 0o755))
    })
    .expect("mkdirs");
    let (p_links, q_links) = run(&db, |tx| {
        let (p, q) = (paths::resolve(tx, "/p")?, paths::resolve(tx, "/q")?);
        names::rename(tx, &ME, p, b"a", q, b"a", 0)?;
        let p_links = dirs::attr(tx, &ME, p)?.inode.nlink;
        Ok((p_links, dirs::attr(tx, &ME, q)?.inode.nlink))
    })
    .expect("rename");
    assert_eq!((p_links, q_links), (2, 3));
}

#[test]
fn bad_names_are_refused() {
    let db = volume();
    for name in [&b""[..], b".", b"..", b"a/b", &[b'x'; 256][..]] {
        let r = run(&db, |tx| {
            names::make_node(
                tx,
                &ME,
                ROOT,
                ROOT_INO,
                name,
                NodeSpec::new(Kind::File, 0o644),
            )
        });
        assert!(
            matches!(r, Err(FsError::Invalid(_) | FsError::NameTooLong)),
            "{name:?}: {r:?}"
        );
    }
}
