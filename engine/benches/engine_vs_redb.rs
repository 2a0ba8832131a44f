//! Engine vs redb on the same work, in one run, on the same disk. Prints a table.
//!
//! cargo bench -p sopfs-engine --bench engine_vs_redb

use engine::{Cursor, Db, Direction, Options, StoreLocation, TreeConfig, TxMode, TxOptions};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::time::{Duration, Instant};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("t");
const VALUE: [u8; 64] = [7; 64];
const LOADED: u32 = 100_000;

fn key(i: u32) -> [u8; 16] {
    // Spread keys over the key space, as file names are.
    let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&h.to_be_bytes());
    k[8..12].copy_from_slice(&i.to_be_bytes());
    k
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

struct Row {
    name: &'static str,
    unit: &'static str,
    sopfs: f64,
    redb: f64,
}

fn sopfs_bench(dir: &std::path::Path, rows: &mut Vec<Row>) {
    let opts = Options {
        background_interval: None,
        ..Options::default()
    };
    let db = Db::open(StoreLocation::Local(dir.to_path_buf()), opts).expect("open");
    db.run(|tx| tx.ensure_tree("t", TreeConfig::default()))
        .expect("tree");
    let begin = |sync| {
        db.begin_with(TxOptions {
            mode: TxMode::ReadWrite,
            timeout: Duration::from_secs(120),
            sync,
        })
        .expect("begin")
    };

    let n = 3000;
    let t = Instant::now();
    for i in 0..n {
        let mut tx = begin(false);
        tx.upsert("t", &key(1_000_000 + i), &VALUE).expect("upsert");
        tx.commit().expect("commit");
    }
    rows.push(Row {
        name: "1-key write tx",
        unit: "tx/s",
        sopfs: rate(n as u64, t.elapsed()),
        redb: 0.0,
    });

    let n = 200;
    let t = Instant::now();
    for i in 0..n {
        let mut tx = begin(true);
        tx.upsert("t", &key(2_000_000 + i), &VALUE).expect("upsert");
        tx.commit().expect("commit");
    }
    rows.push(Row {
        name: "1-key write tx, fsync",
        unit: "tx/s",
        sopfs: rate(n as u64, t.elapsed()),
        redb: 0.0,
    });

    let t = Instant::now();
    let batches = LOADED / 1000;
    for b in 0..batches {
        let mut tx = begin(false);
        for i in b * 1000..(b + 1) * 1000 {
            tx.upsert("t", &key(i), &VALUE).expect("upsert");
        }
        tx.commit().expect("commit");
    }
    rows.push(Row {
        name: "1,000-key write tx",
        unit: "tx/s",
        sopfs: rate(batches as u64, t.elapsed()),
        redb: 0.0,
    });

    let mut tx = db.begin(TxMode::ReadOnly).expect("begin");
    let gets = 200_000u32;
    let t = Instant::now();
    for i in 0..gets {
        let k = key((i.wrapping_mul(7919)) % LOADED);
        assert!(tx.get("t", &k).expect("get").is_some());
    }
    rows.push(Row {
        name: "point get",
        unit: "gets/s",
        sopfs: rate(gets as u64, t.elapsed()),
        redb: 0.0,
    });

    let t = Instant::now();
    let mut cursor = Cursor::new(.., Direction::Forward);
    let mut items = 0u64;
    while !cursor.is_done() {
        items += tx.scan("t", &mut cursor, 1024).expect("scan").len() as u64;
    }
    rows.push(Row {
        name: "scan",
        unit: "items/s",
        sopfs: rate(items, t.elapsed()),
        redb: 0.0,
    });
}

fn redb_bench(dir: &std::path::Path, rows: &mut [Row]) {
    let db = Database::create(dir.join("redb")).expect("create");
    let write = |keys: &mut dyn Iterator<Item = [u8; 16]>, durable: bool| {
        let mut tx = db.begin_write().expect("begin");
        tx.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })
        .expect("durability");
        {
            let mut t = tx.open_table(TABLE).expect("table");
            for k in keys {
                t.insert(k.as_slice(), VALUE.as_slice()).expect("insert");
            }
        }
        tx.commit().expect("commit");
    };
    let n = 3000;
    let t = Instant::now();
    for i in 0..n {
        write(&mut std::iter::once(key(1_000_000 + i)), false);
    }
    rows[0].redb = rate(n as u64, t.elapsed());
    let n = 200;
    let t = Instant::now();
    for i in 0..n {
        write(&mut std::iter::once(key(2_000_000 + i)), true);
    }
    rows[1].redb = rate(n as u64, t.elapsed());
    let t = Instant::now();
    let batches = LOADED / 1000;
    for b in 0..batches {
        write(&mut (b * 1000..(b + 1) * 1000).map(key), false);
    }
    rows[2].redb = rate(batches as u64, t.elapsed());
    let rtx = db.begin_read().expect("read");
    let table = rtx.open_table(TABLE).expect("table");
    let gets = 200_000u32;
    let t = Instant::now();
    for i in 0..gets {
        let k = key((i.wrapping_mul(7919)) % LOADED);
        assert!(table.get(k.as_slice()).expect("get").is_some());
    }
    rows[3].redb = rate(gets as u64, t.elapsed());
    let t = Instant::now();
    let mut items = 0u64;
    for e in table.iter().expect("iter") {
        e.expect("entry");
        items += 1;
    }
    rows[4].redb = rate(items, t.elapsed());
}

fn main() {
    // `cargo test --benches` runs bench binaries with --bench absent: stay quick then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .expect("tempdir");
    let mut rows = Vec::new();
    sopfs_bench(&dir.path().join("sopfs"), &mut rows);
    redb_bench(dir.path(), &mut rows);
    println!("| workload | sopfs engine | redb 4.6 | sopfs / redb |");
    println!("|---|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.0} {} | {:.0} {} | {:.2} |",
            r.name,
            r.sopfs,
            r.unit,
            r.redb,
            r.unit,
            r.sopfs / r.redb
        );
    }
}
