#!/usr/bin/env python3
"""The crash check JuiceFS runs, on sopfs: writers create 4 KiB files with
fsync for a while, the daemon is killed with SIGKILL while they write, the
volume is mounted again with an empty cache folder, and every file whose
fsync returned must read back byte for byte.

Usage (as root, from the repository, after `cargo build --release -p sopfs`):

    python3 bench/crash_check.py                 # a local folder
    python3 bench/crash_check.py --s3            # a local S3 server (moto) and redis-server
    python3 bench/crash_check.py --secs 15 --writers 4 --rounds 3

Each round kills the daemon once; the volume carries over between rounds,
and every file acknowledged in any round is checked after every remount.
Prints one line per round and a closing line "N passed, M failed".
"""

import argparse
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsbench as fb  # noqa: E402

WORK = "/var/tmp/sopfs-crash-check"
SIZE = 4096


def content(w, i):
    seed = (w * 1_000_003 + i * 7919) & 0xFFFFFFFF
    return bytes(((seed >> (j % 24)) ^ j) & 0xFF for j in range(SIZE))


def writer(mnt, round_, w, stop, acks):
    d = f"{mnt}/r{round_}/w{w}"
    try:
        os.makedirs(d, exist_ok=True)
    except OSError:
        return
    i = 0
    while not stop.is_set():
        name = f"r{round_}/w{w}/f{i}"
        try:
            fd = os.open(f"{mnt}/{name}", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
            os.write(fd, content(w + 100 * round_, i))
            os.fsync(fd)
            os.close(fd)
        except OSError:
            return  # the daemon is gone
        acks.put(name)
        i += 1


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_s3():
    """moto and redis-server on free loopback ports; returns (store, redis, procs)."""
    port, rport = free_port(), free_port()
    moto = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    redis = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(f"PUT /crash HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                          "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    break
        except OSError:
            pass
        if time.time() > deadline:
            sys.exit("crash_check: moto_server did not start (pip install 'moto[server]')")
        time.sleep(0.2)
    os.environ.update({
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    })
    return "s3://crash/vol", f"redis://127.0.0.1:{rport}/", [moto, redis]


def mount(binary, store, redis, mnt, cache):
    shutil.rmtree(cache, ignore_errors=True)
    os.makedirs(cache)
    cmd = [binary, "mount", store, mnt, "-o", f"cache_dir={cache}"]
    if redis:
        cmd += ["--redis", redis]
    log = open(f"{WORK}/daemon.log", "a")
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.time() + 60
    while True:
        with open("/proc/mounts") as f:
            if any(line.split()[1] == mnt for line in f):
                return p
        if p.poll() is not None or time.time() > deadline:
            p.kill()
            with open(f"{WORK}/daemon.log") as f:
                tail = f.read()[-2000:]
            sys.exit(f"crash_check: {store} did not mount on {mnt}:\n{tail}")
        time.sleep(0.05)


def check(mnt, acked):
    bad = []
    for name in acked:
        _, w, f = name.split("/")
        round_ = int(name.split("/")[0][1:])
        want = content(int(w[1:]) + 100 * round_, int(f[1:]))
        try:
            with open(f"{mnt}/{name}", "rb") as fh:
                got = fh.read()
        except OSError as e:
            bad.append(f"{name}: {e}")
            continue
        if got != want:
            bad.append(f"{name}: {len(got)} bytes, content differs")
    return bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--s3", action="store_true")
    ap.add_argument("--secs", type=float, default=15)
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bin", default="target/release/sopfs")
    args = ap.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    mnt, cache = f"{WORK}/mnt", f"{WORK}/cache"
    os.makedirs(mnt)
    procs = []
    if args.s3:
        store, redis, procs = start_s3()
    else:
        store, redis = f"{WORK}/store", None
    acked, passed, failed = [], 0, 0
    try:
        for r in range(args.rounds):
            daemon = mount(args.bin, store, redis, mnt, cache)
            stop, acks = mp.Event(), mp.Queue()
            ws = [mp.Process(target=writer, args=(mnt, r, w, stop, acks))
                  for w in range(args.writers)]
            for p in ws:
                p.start()
            time.sleep(args.secs)
            daemon.send_signal(signal.SIGKILL)  # while the writers write
            daemon.wait()
            stop.set()
            before = len(acked)
            deadline = time.time() + 30
            while any(p.is_alive() for p in ws) or not acks.empty():
                while not acks.empty():
                    acked.append(acks.get())
                if time.time() > deadline:
                    break
                time.sleep(0.05)
            for p in ws:
                p.join(5)
            subprocess.run(["fusermount3", "-uz", mnt], stderr=subprocess.DEVNULL)
            daemon = mount(args.bin, store, redis, mnt, cache)
            bad = check(mnt, acked)
            daemon.send_signal(signal.SIGTERM)
            daemon.wait()
            new = len(acked) - before
            print(f"round {r + 1}: {new} files fsync'd in {args.secs:g} s "
                  f"({new / args.secs:.0f}/s), SIGKILL, remount: "
                  f"{len(acked) - len(bad)} of {len(acked)} read back whole")
            for line in bad[:10]:
                print(f"  lost: {line}")
            if bad:
                failed += 1
            else:
                passed += 1
    finally:
        subprocess.run(["fusermount3", "-uz", mnt], stderr=subprocess.DEVNULL)
        for p in procs:
            p.kill()
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
