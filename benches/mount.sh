#!/usr/bin/env bash
# s3mirror mount beside rclone mount on one local Garage server: a cold sequential read
# of one large object, and `ls -R` of a tree of small objects, each on a fresh mount.
#
#   benches/mount.sh [--mib N] [--files N] [--out DIR]
#
# Writes DIR/mount.md (default DIR: bench-results/latest). Ratios measured in one run are
# the figures to quote; the server shares the machine's CPUs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/garage-lib.sh

mib=256 files=10000 out=bench-results/latest
while [ $# -gt 0 ]; do
    case $1 in
        --mib) mib=$2; shift 2 ;;
        --files) files=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

need_apt=()
command -v rclone >/dev/null || need_apt+=(rclone)
command -v fusermount3 >/dev/null || need_apt+=(fuse3)
if [ ${#need_apt[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
garage_install
cargo build --release --quiet -p s3mirror
s3mirror=$PWD/target/release/s3mirror

work=$(mktemp -d -t s3mirror-mount-bench-XXXXXX)
mounted=()
cleanup() {
    for m in "${mounted[@]}"; do umount -l "$m" 2>/dev/null || true; done
    garage_stop
    rm -rf "$work"
}
trap cleanup EXIT
GARAGE_DB_ENGINE=lmdb garage_start "$work/garage"
garage_client_env
unset AWS_CA_BUNDLE
garage_bucket mountbench
export RCLONE_CONFIG_G_TYPE=s3 RCLONE_CONFIG_G_PROVIDER=Other RCLONE_CONFIG_G_ENDPOINT=$GARAGE_ENDPOINT \
    RCLONE_CONFIG_G_REGION=$GARAGE_REGION RCLONE_CONFIG_G_ACCESS_KEY_ID=$GARAGE_ACCESS_KEY \
    RCLONE_CONFIG_G_SECRET_ACCESS_KEY=$GARAGE_SECRET_KEY

echo "generating and uploading data..." >&2
mkdir -p "$work/big" "$work/tree"
head -c "$((mib << 20))" /dev/urandom >"$work/big/big.bin"
python3 - "$work/tree" "$files" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"d{i % 100:03d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:06d}"), "wb") as f:
        f.write(b"x" * 16)
PY
"$s3mirror" "$work/big" s3://mountbench/big -q
"$s3mirror" "$work/tree" s3://mountbench/tree -q --threads 64

now() { date +%s.%N; }
wait_mounted() { # DIR
    for _ in $(seq 1 600); do
        if grep -q " $1 " /proc/self/mountinfo; then return 0; fi
        sleep 0.05
    done
    echo "$1 was not mounted" >&2
    return 1
}
mount_tool() { # TOOL DIR
    mkdir -p "$2"
    case $1 in
        s3mirror) "$s3mirror" mount s3://mountbench "$2" --cache-dir "$work/cache-$RANDOM" >/dev/null 2>&1 ;;
        rclone) rclone mount g:mountbench "$2" --daemon --read-only ;;
    esac
    wait_mounted "$2"
    mounted+=("$2")
}

results=$work/results
: >"$results"
for tool in s3mirror rclone; do
    dir=$work/mnt-$tool-read
    mount_tool "$tool" "$dir"
    start=$(now)
    cat "$dir/big/big.bin" >/dev/null
    secs=$(python3 -c "print($(now) - $start)")
    umount "$dir"
    dir=$work/mnt-$tool-ls
    mount_tool "$tool" "$dir"
    start=$(now)
    count=$(ls -R "$dir/tree" | grep -c '^f')
    ls_secs=$(python3 -c "print($(now) - $start)")
    umount "$dir"
    [ "$count" -eq "$files" ] || { echo "$tool listed $count of $files files" >&2; exit 1; }
    echo "$tool $secs $ls_secs" >>"$results"
done

mkdir -p "$out"
python3 - "$results" "$mib" "$files" >"$out/mount.md" <<'PY'
import sys
rows = [line.split() for line in open(sys.argv[1])]
mib, files = int(sys.argv[2]), int(sys.argv[3])
t = {r[0]: (float(r[1]), float(r[2])) for r in rows}
print(f"| tool | sequential read of {mib} MiB, MiB/s | `ls -R` of {files:,} files, s |")
print("|---|---:|---:|")
for tool, (read, ls) in t.items():
    print(f"| {tool} | {mib / read:.0f} | {ls:.2f} |")
s, r = t["s3mirror"], t["rclone"]
print()
print(f"s3mirror / rclone: read {r[0] / s[0]:.2f}x the throughput, `ls -R` {r[1] / s[1]:.2f}x as fast.")
PY
cat "$out/mount.md"
