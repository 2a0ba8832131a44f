#!/usr/bin/env python3
"""What compression and encryption at rest cost: the same mount on a local
folder formatted four ways (plain, zstd, a key, both), each measured with
`sopfs bench` (a big file of a compressible pattern, then small files) and
with a big file of random bytes (written with fsync, read back cold after a
remount). Configurations alternate within each round; the table shows the
median of the rounds and the store's size after the random file.

Usage (as root, from the repository, after `cargo build --release -p sopfs`):

    python3 bench/at_rest.py [--rounds 3] [--big-mib 256] [--small-files 1000]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

SOPFS = os.path.abspath("target/release/sopfs")
CONFIGS = [
    ("plain", []),
    ("zstd:3", ["--compress", "zstd:3"]),
    ("key", ["--key-file", "KEY"]),
    ("zstd:3 + key", ["--compress", "zstd:3", "--key-file", "KEY"]),
]


def run(args, **kw):
    if os.environ.get("AT_REST_TRACE"):
        print("+", " ".join(args[1:3]), file=sys.stderr)
    r = subprocess.run(args, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"{' '.join(args)}: {r.stderr.strip()}")
    return r


def mount(store, mp, key):
    opts = ["-o", f"key_file={key}"] if key else []
    run([SOPFS, "mount", store, mp, "--background", *opts])


def umount(mp):
    run([SOPFS, "umount", mp])


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def one(work, name, flags, a, noise):
    store = os.path.join(work, "store")
    mp = os.path.join(work, "mnt")
    key = os.path.join(work, "key")
    shutil.rmtree(store, ignore_errors=True)
    os.makedirs(mp, exist_ok=True)
    uses_key = "KEY" in flags
    run([SOPFS, "format", store, *[key if f == "KEY" else f for f in flags]])
    mount(store, mp, key if uses_key else None)
    try:
        out = run([SOPFS, "bench", mp, "--json", "--big-mib", str(a.big_mib),
                   "--small-files", str(a.small_files)]).stdout
        phases = {p["name"]: p["rate"] for p in json.loads(out)["phases"]}
        path = os.path.join(mp, "random.bin")
        t = time.monotonic()
        with open(path, "wb") as f:
            for i in range(0, len(noise), 1 << 20):
                f.write(noise[i:i + (1 << 20)])
            f.flush()
            os.fsync(f.fileno())
        rw = len(noise) / (1 << 20) / (time.monotonic() - t)
    finally:
        umount(mp)
    mount(store, mp, key if uses_key else None)
    try:
        t = time.monotonic()
        with open(os.path.join(mp, "random.bin"), "rb") as f:
            got = 0
            while True:
                b = f.read(1 << 20)
                if not b:
                    break
                got += len(b)
        rr = got / (1 << 20) / (time.monotonic() - t)
        assert got == len(noise), "random file read back short"
    finally:
        umount(mp)
    size = du(store) / (1 << 20)
    return {
        "pattern write": phases["big_write_fsync"],
        "pattern read": phases["big_read"],
        "random write": rw,
        "random read": rr,
        "small create": phases["small_create"],
        "small read": phases["small_read"],
        "store MiB": size,
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--big-mib", type=int, default=256)
    p.add_argument("--small-files", type=int, default=1000)
    p.add_argument("--dir", default="/var/tmp")
    a = p.parse_args()
    if not os.path.exists(SOPFS):
        sys.exit("build first: cargo build --release -p sopfs")
    work = tempfile.mkdtemp(prefix="sopfs-at-rest-", dir=a.dir)
    with open(os.path.join(work, "key"), "w") as f:
        f.write(os.urandom(32).hex() + "\n")
    noise = os.urandom(a.big_mib << 20)
    results = {name: [] for name, _ in CONFIGS}
    try:
        for r in range(a.rounds):
            order = CONFIGS[r % len(CONFIGS):] + CONFIGS[:r % len(CONFIGS)]
            for name, flags in order:
                res = one(work, name, flags, a, noise)
                results[name].append(res)
                print(f"round {r + 1} {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in res.items()),
                      file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cols = list(next(iter(results.values()))[0].keys())
    units = {"small create": "files/s", "small read": "files/s", "store MiB": "MiB"}
    print("| volume | " + " | ".join(f"{c} ({units.get(c, 'MiB/s')})" for c in cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for name, _ in CONFIGS:
        med = {c: statistics.median(x[c] for x in results[name]) for c in cols}
        print(f"| {name} | " + " | ".join(f"{med[c]:.0f}" for c in cols) + " |")


if __name__ == "__main__":
    main()
