#!/usr/bin/env bash
# The memory of `s3mirror mount` over a large tree: RSS after `find` (names only), after
# stat-ing every file (each one looked up, so the kernel holds an inode for each), and
# after the kernel drops its caches and forgets those inodes.
#
#   benches/mount-memory.sh [--files N] [--out DIR]
#
# Writes DIR/mount-memory-N.md (default DIR: bench-results/latest). Needs root (to drop
# the kernel's caches).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/garage-lib.sh

files=1000000 out=bench-results/latest
while [ $# -gt 0 ]; do
    case $1 in
        --files) files=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

garage_install
cargo build --release --quiet -p s3mirror
s3mirror=$PWD/target/release/s3mirror

work=$(mktemp -d -t s3mirror-mount-memory-XXXXXX)
mnt=$work/mnt
cleanup() {
    umount -l "$mnt" 2>/dev/null || true
    garage_stop
    rm -rf "$work"
}
trap cleanup EXIT
GARAGE_DB_ENGINE=lmdb garage_start "$work/garage"
garage_client_env
unset AWS_CA_BUNDLE
garage_bucket memorybench

echo "generating and uploading $files files..." >&2
python3 - "$work/tree" "$files" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"d{i % 1000:04d}")
    if i < 1000:
        os.makedirs(d)
    with open(os.path.join(d, f"f{i:08d}"), "wb") as f:
        f.write(b"x" * 16)
PY
"$s3mirror" "$work/tree" s3://memorybench/tree -q --threads 128
rm -rf "$work/tree"

mkdir -p "$mnt"
"$s3mirror" mount s3://memorybench "$mnt" --cache-dir "$work" --metadata-ttl 1s >/dev/null 2>&1
rss() {
    awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$(pgrep -f -- "mount s3://memorybench $mnt" | head -1)/status"
}
start=$(date +%s.%N)
count=$(find "$mnt/tree" -type f | wc -l)
find_secs=$(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')")
[ "$count" -eq "$files" ] || { echo "found $count of $files files" >&2; exit 1; }
after_find=$(rss)
start=$(date +%s.%N)
find "$mnt/tree" -type f -printf '%s\n' >/dev/null
stat_secs=$(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')")
after_stat=$(rss)
sync
echo 3 >/proc/sys/vm/drop_caches
sleep 5
after_drop=$(rss)
umount "$mnt"

mkdir -p "$out"
{
    echo "| files | \`find\`, s | RSS after it, MiB | stat of every file, s | RSS after it, MiB | RSS after the kernel forgot them, MiB |"
    echo "|---:|---:|---:|---:|---:|---:|"
    echo "| $files | $find_secs | $after_find | $stat_secs | $after_stat | $after_drop |"
} >"$out/mount-memory-$files.md"
cat "$out/mount-memory-$files.md"
