#!/usr/bin/env python3
"""A/B two sopfs builds on one workload, in alternating runs.

This machine's disk and CPU speed swing several-fold from minute to minute,
so one run of each build says little. This script mounts each build in
turn (A, B, A, B, ...), runs the same workload on it, and prints every run
with the daemon's CPU time per operation (less noisy than wall time), then
the medians.

Usage (as root, from the repository):

    cp target/release/sopfs /tmp/sopfs-before    # then change and rebuild
    python3 bench/ab.py --bin before=/tmp/sopfs-before --bin after=target/release/sopfs \\
        --workload creates4k --runs 3 [--redis]

Workloads: creates, creates4k (one process), creates128k (1,000 files of
128 KiB), read128k (those files read whole, cold), creates4p (4 processes, own folders), stat and stat4p (cold kernel caches; one or 4 processes), tar (/usr/share/doc), seqwrite (1 GiB
write+close and write+fsync), seqread (1 GiB cold), randread (2,000 cold
4 KiB reads at random places of a 256 MiB file). With --redis each build
runs as a two-mount cluster on a private redis-server (the second mount
idles, as another host would), and the second daemon's CPU is shown too.
Where a workload measures two things (seqwrite), the CPU covers both.
"""

import argparse
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsbench as fb  # noqa: E402

WORK = "/var/tmp/sopfs-ab"
N = 4000


def cpu_seconds(pid):
    if not pid:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mount(binary, redis):
    store = f"{WORK}/store"
    mounts = [f"{WORK}/a"] + ([f"{WORK}/b"] if redis else [])
    for m in mounts:
        os.makedirs(m)
        cmd = [binary, "mount", store, m, "--background"]
        if redis:
            cmd += ["--redis", redis]
        subprocess.run(cmd, check=True)
        fb.wait_mounted(m)
    return mounts, [fb.daemon_pid(m) for m in mounts]


def creates(d, n, size, k=0):
    data = b"x" * size
    for i in range(n):
        fd = os.open(f"{d}/f{k}-{i}", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
        if size:
            os.write(fd, data)
        os.close(fd)


def workload(name, mnt, tarball, start):
    """Runs one workload; returns (label, ops, seconds) triples. `start()`
    is called where the measured part begins (after any setup)."""
    out = []
    if name in ("creates", "creates4k", "stat"):
        d = f"{mnt}/w"
        os.makedirs(d)
        if name != "stat":
            start()
        t = time.perf_counter()
        creates(d, N, 4096 if name == "creates4k" else 0)
        out.append(("create", N, time.perf_counter() - t))
        if name == "stat":
            fb.drop_caches()
            start()
            t = time.perf_counter()
            for i in range(N):
                os.stat(f"{d}/f0-{i}")
            out = [("stat", N, time.perf_counter() - t)]
    elif name == "stat4p":
        dirs = [f"{mnt}/w{k}" for k in range(4)]
        for k, d in enumerate(dirs):
            os.makedirs(d)
            creates(d, N // 4, 0, k)
        fb.drop_caches()
        start()

        def stats(d, n, k):
            for i in range(n):
                os.stat(f"{d}/f{k}-{i}")

        t = fb._phase(stats, [(d, N // 4, k) for k, d in enumerate(dirs)])
        out.append(("stat, 4 procs", N, t))
    elif name == "creates128k":
        # Medium files: one chunk each, carried in the commit record (up to
        # 256 KiB a value); before 2026-12-04 a blob each.
        d = f"{mnt}/w"
        os.makedirs(d)
        start()
        t = time.perf_counter()
        creates(d, N // 4, 128 << 10)
        out.append(("create 128 KiB", N // 4, time.perf_counter() - t))
    elif name == "read128k":
        # Cold whole-file reads of the files creates128k makes.
        d = f"{mnt}/w"
        os.makedirs(d)
        creates(d, N // 4, 128 << 10)
        fb.drop_caches()
        start()
        t = time.perf_counter()
        for i in range(N // 4):
            with open(f"{d}/f0-{i}", "rb") as f:
                while f.read(1 << 20):
                    pass
        out.append(("read 128 KiB cold", N // 4, time.perf_counter() - t))
    elif name == "creates4p":
        dirs = [f"{mnt}/w{k}" for k in range(4)]
        for d in dirs:
            os.makedirs(d)
        start()
        t = fb._phase(creates, [(d, N // 4, 4096, k) for k, d in enumerate(dirs)])
        out.append(("create 4 KiB, 4 procs", N, t))
    elif name == "tar":
        d = f"{mnt}/t"
        os.makedirs(d)
        start()
        t = time.perf_counter()
        subprocess.run(["tar", "xf", tarball, "-C", d], check=True)
        with tarfile.open(tarball) as tf:
            n = len(tf.getmembers())
        out.append(("tar x entry", n, time.perf_counter() - t))
    elif name == "seqwrite":
        buf = os.urandom(fb.BLOCK)
        start()
        for fsync in (False, True):
            fb.drop_caches()
            mibs = fb._write_big(f"{mnt}/big", 1024, buf, fsync)
            out.append(("MiB written" + (" +fsync" if fsync else ""), 1024, 1024 / mibs))
            os.unlink(f"{mnt}/big")
    elif name == "seqread":
        buf = os.urandom(fb.BLOCK)
        fb._write_big(f"{mnt}/big", 1024, buf, True)
        fb.drop_caches()
        start()
        t = time.perf_counter()
        fd = os.open(f"{mnt}/big", os.O_RDONLY)
        while os.read(fd, fb.BLOCK):
            pass
        os.close(fd)
        out.append(("MiB read", 1024, time.perf_counter() - t))
    elif name == "randread":
        # Cold 4 KiB reads at random places of a 256 MiB file, as fsbench's
        # "random 4 KiB reads/s" (a database's page reads).
        buf = os.urandom(fb.BLOCK)
        fb._write_big(f"{mnt}/big", 256, buf, True)
        fb.drop_caches()
        secs = fb.random_reads(f"{mnt}/big", 256, start)
        out.append(("random 4 KiB read", fb.RANDOM_READS, secs))
    else:
        sys.exit(f"ab: unknown workload {name}")
    return out


def one_run(label, binary, args, tarball, redis_url):
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    mounts, pids = mount(binary, redis_url)
    try:
        cpu0 = []

        def start():
            cpu0[:] = [cpu_seconds(p) for p in pids]

        results = workload(args.workload, mounts[0], tarball, start)
        cpu1 = [cpu_seconds(p) for p in pids]
    finally:
        for m in mounts:
            subprocess.run([binary, "umount", m], check=False)
    rows = []
    for what, ops, secs in results:
        cpu = [(b - a) / ops * 1e6 for a, b in zip(cpu0, cpu1)]
        rows.append((label, what, ops / secs, cpu))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", action="append", required=True, help="NAME=PATH, twice or more")
    ap.add_argument("--workload", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--redis", action="store_true", help="two mounts on a private redis-server")
    args = ap.parse_args()
    bins = [b.split("=", 1) for b in args.bin]
    tarball = "/var/tmp/sopfs-ab-doc.tar"
    if args.workload == "tar" and not os.path.exists(tarball):
        with tarfile.open(tarball, "w") as tf:
            tf.add("/usr/share/doc", arcname="doc")
    redis = None
    redis_url = None
    if args.redis:
        port = fb.free_port()
        redis = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        redis_url = f"redis://127.0.0.1:{port}/3"
    rows = []
    try:
        for r in range(args.runs):
            for label, binary in bins:
                if redis:
                    subprocess.run(["redis-cli", "-p", str(port), "-n", "3", "flushdb"],
                                   check=False, stdout=subprocess.DEVNULL)
                for row in one_run(label, binary, args, tarball, redis_url):
                    rows.append(row)
                    label_, what, rate, cpu = row
                    cpus = " / ".join(f"{c:.0f}" for c in cpu)
                    print(f"run {r + 1}  {label_:>10}  {what:>22}  {rate:10.0f}/s  daemon CPU {cpus} us/op",
                          flush=True)
    finally:
        if redis:
            redis.terminate()
        shutil.rmtree(WORK, ignore_errors=True)
    print()
    print("| build | measure | median ops/s | median daemon CPU us/op |")
    print("|---|---|---:|---:|")
    keys = []
    for label, what, _, _ in rows:
        if (label, what) not in keys:
            keys.append((label, what))
    for label, what in keys:
        mine = [r for r in rows if r[0] == label and r[1] == what]
        rate = statistics.median(r[2] for r in mine)
        cpu = " / ".join(
            f"{statistics.median(r[3][i] for r in mine):.0f}" for i in range(len(mine[0][3]))
        )
        print(f"| {label} | {what} | {rate:,.0f} | {cpu} |")


if __name__ == "__main__":
    main()
