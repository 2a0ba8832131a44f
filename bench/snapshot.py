#!/usr/bin/env python3
"""How long `sopfs snapshot create` takes as the volume grows (it should
not grow with it), and how a walk of the snapshot compares with a walk of
the live tree (`find` + a read of every 50th file), in alternating order.

Usage (as root, from the repository, after `cargo build --release -p sopfs`):

    python3 bench/snapshot.py [--sizes 1000,20000,100000] [--takes 5]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

SOPFS = os.path.abspath("target/release/sopfs")
PER_DIR = 100


def run(args):
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def grow(root, have, want):
    """Adds directories of PER_DIR - 1 small files until `want` entries."""
    d = have // PER_DIR
    while have < want:
        dp = os.path.join(root, f"d{d:05}")
        os.mkdir(dp)
        have += 1
        for f in range(PER_DIR - 1):
            with open(os.path.join(dp, f"f{f:03}"), "wb") as fh:
                fh.write((f"{d}/{f} " * 40).encode())
            have += 1
        d += 1
    return have


def walk(root):
    """Seconds to list every entry and read every 50th file; the count."""
    t = time.perf_counter()
    n = 0
    for dp, ds, fs in os.walk(root):
        n += len(ds) + len(fs)
        for f in fs[::50]:
            with open(os.path.join(dp, f), "rb") as fh:
                fh.read()
    return time.perf_counter() - t, n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,20000,100000")
    ap.add_argument("--takes", type=int, default=5)
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        store, mp = os.path.join(tmp, "v"), os.path.join(tmp, "m")
        os.mkdir(mp)
        run([SOPFS, "mount", "--background", store, mp])
        try:
            live = os.path.join(mp, "tree")
            os.mkdir(live)
            have, rows = 0, []
            for size in sizes:
                have = grow(live, have, size)
                times = []
                for i in range(a.takes):
                    t = time.perf_counter()
                    run([SOPFS, "snapshot", "create", mp, f"s{size}-{i}"])
                    times.append((time.perf_counter() - t) * 1000)
                snap = os.path.join(mp, ".snapshots", f"s{size}-0", "tree")
                walks = {"live": [], "snapshot": []}
                for r in range(2):
                    order = [("live", live), ("snapshot", snap)]
                    for name, root in order if r % 2 == 0 else order[::-1]:
                        s, n = walk(root)
                        if n != have:
                            sys.exit(f"{name} holds {n} entries, not {have}")
                        walks[name].append(s)
                rows.append((have, statistics.median(times), min(times), max(times),
                             statistics.median(walks["live"]),
                             statistics.median(walks["snapshot"])))
                for i in range(a.takes):
                    run([SOPFS, "snapshot", "delete", mp, f"s{size}-{i}"])
        finally:
            run([SOPFS, "umount", mp])
    print(f"| entries | snapshot create, ms (median, min-max of {a.takes}) "
          "| walk live, s | walk snapshot, s |")
    print("|---|---|---|---|")
    for have, med, lo, hi, wl, ws in rows:
        print(f"| {have:,} | {med:.1f} ({lo:.1f}-{hi:.1f}) | {wl:.2f} | {ws:.2f} |")


if __name__ == "__main__":
    main()
