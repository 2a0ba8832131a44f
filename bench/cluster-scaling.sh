#!/usr/bin/env bash
# Aggregate commits/s of 1, 2 and 4 processes inserting into ONE B-tree and
# into 4 B-trees, coordinated through a private redis-server, local store.
# Usage: bench/cluster-scaling.sh [per-process commits, default 2000]
set -euo pipefail
cd "$(dirname "$0")/.."
per=${1:-2000}
cargo build --release -q --example swarm
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
redis_pid=$!
trap 'kill $redis_pid 2>/dev/null' EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
echo "| processes | trees | commits/s | merges | conflicts | log-slot collisions |"
echo "|---:|---:|---:|---:|---:|---:|"
for trees in 1 4; do
  for procs in 1 2 4; do
    dir=$(mktemp -d)
    line=$(target/release/examples/swarm --procs "$procs" --trees "$trees" --per-worker "$per" \
             --redis "redis://127.0.0.1:$port/" --store "$dir/vol" | grep '^RESULT')
    rm -rf "$dir"
    eval "$(echo "${line#RESULT }" | tr ' ' '\n' | sed 's/^/r_/')"
    echo "| $procs | $trees | $r_commits_per_s | $r_merges | $r_conflicts | $r_collisions |"
  done
done
