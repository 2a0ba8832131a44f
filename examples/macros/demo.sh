#!/usr/bin/env bash
# Runs the example macros on a fresh volume shared through a private Redis:
# bash examples/macros/demo.sh (as root, with fuse3 and redis-server installed).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cargo build -q --release -p sopfs -p mount-tools --manifest-path "$root/Cargo.toml"
bin="$root/target/release"
export PATH="$bin:$PATH"
work="$(mktemp -d)"; mnt="$work/mnt"; mkdir "$mnt"
redis-server --port 6391 --save "" --daemonize yes --pidfile "$work/redis.pid" >/dev/null
cleanup() {
  cd /
  sopfs umount "$mnt" 2>/dev/null || true
  for _ in $(seq 50); do grep -q " $mnt " /proc/mounts || break; sleep 0.1; done
  kill "$(cat "$work/redis.pid")"
  rm -rf "$work"
}
trap cleanup EXIT
export SOPFS_STORE="$work/store" SOPFS_REDIS=redis://127.0.0.1:6391/
sopfs mount "$SOPFS_STORE" "$mnt" --redis "$SOPFS_REDIS" --background
cd "$mnt"
for m in "$here"/*.json; do cp "$m" ".macros/$(basename "$m" .json)"; done
echo '$ ls .macros'; ls .macros

mkdir -p inbox docs/notes
echo old > inbox/report-2024.txt; touch -d '90 days ago' inbox/report-2024.txt
echo new > inbox/today.txt
echo '$ .macros/archive-old /inbox 30'; .macros/archive-old /inbox 30

printf 'alpha\n' > docs/a.md; printf 'TODO: fix\n' > docs/b.md; printf 'x\n' > docs/notes/n.md
echo '$ .macros/index-tree /docs && cat docs/INDEX.txt'; .macros/index-tree /docs; cat docs/INDEX.txt

echo '$ for f in a.md b.md; do echo "find-todo /docs $f" > .jobs/new; done'
for f in a.md b.md; do echo "find-todo /docs $f" > .jobs/new; done
sopfs agent --idle-exit 1 2>/dev/null
echo '$ cat .jobs/*/result'; cat .jobs/*/result
echo '$ .macros/collect-results'; .macros/collect-results
