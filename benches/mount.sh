#!/usr/bin/env bash
# s3mirror mount beside s3fs-fuse and rclone mount on one local Garage server, each test
# on a fresh mount (cold caches): `find` over a tree of small objects and the mount's RSS
# after it, a cold read of 1,000 small files, a cold sequential read of one large
# object, and `cp -r` of 200 small files into the mount.
#
#   benches/mount.sh [--files N] [--mib N] [--out DIR]
#
# Writes DIR/mount.md (default DIR: bench-results/latest). Ratios measured in one run are
# the figures to quote; the server shares the machine's CPUs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/garage-lib.sh

files=100000 mib=256 out=bench-results/latest
while [ $# -gt 0 ]; do
    case $1 in
        --files) files=$2; shift 2 ;;
        --mib) mib=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

need_apt=()
command -v rclone >/dev/null || need_apt+=(rclone)
command -v s3fs >/dev/null || need_apt+=(s3fs)
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
echo "$GARAGE_ACCESS_KEY:$GARAGE_SECRET_KEY" >"$work/s3fs-passwd"
chmod 600 "$work/s3fs-passwd"

echo "generating and uploading data ($files files)..." >&2
mkdir -p "$work/big" "$work/tree" "$work/small" "$work/copy"
head -c "$((mib << 20))" /dev/urandom >"$work/big/big.bin"
python3 - "$work" "$files" <<'PY'
import os, sys
work, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(work, "tree", f"d{i % 100:03d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:07d}"), "wb") as f:
        f.write(b"x" * 16)
for i in range(1000):
    with open(os.path.join(work, "small", f"s{i:04d}"), "wb") as f:
        f.write(os.urandom(1024))
for i in range(200):
    with open(os.path.join(work, "copy", f"c{i:03d}"), "wb") as f:
        f.write(os.urandom(4096))
PY
for part in big tree small; do
    "$s3mirror" "$work/$part" "s3://mountbench/$part" -q --threads 64
done

now() { date +%s.%N; }
since() { python3 -c "print(f'{$(now) - $1:.3f}')"; }
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
        s3fs) s3fs mountbench "$2" -o "passwd_file=$work/s3fs-passwd,url=$GARAGE_ENDPOINT" \
            -o "use_path_request_style,endpoint=$GARAGE_REGION" ;;
        rclone) rclone mount g:mountbench "$2" --daemon --vfs-cache-mode writes \
            --cache-dir "$work/rclone-cache-$RANDOM" ;;
    esac
    wait_mounted "$2"
    mounted+=("$2")
}
# The resident memory of the process serving a mount point, in MiB.
rss_of() { # DIR
    local pid
    pid=$(pgrep -f -- "$1" | head -1)
    awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$pid/status"
}

results=$work/results
: >"$results"
for tool in s3mirror s3fs rclone; do
    dir=$work/mnt-$tool-find
    mount_tool "$tool" "$dir"
    start=$(now)
    count=$(find "$dir/tree" -type f | wc -l)
    find_secs=$(since "$start")
    rss=$(rss_of "$dir")
    umount "$dir"
    [ "$count" -eq "$files" ] || { echo "$tool found $count of $files files" >&2; exit 1; }

    dir=$work/mnt-$tool-small
    mount_tool "$tool" "$dir"
    start=$(now)
    cat "$dir"/small/* >/dev/null
    small_secs=$(since "$start")
    umount "$dir"

    dir=$work/mnt-$tool-big
    mount_tool "$tool" "$dir"
    start=$(now)
    cat "$dir/big/big.bin" >/dev/null
    big_secs=$(since "$start")
    umount "$dir"

    dir=$work/mnt-$tool-cp
    mount_tool "$tool" "$dir"
    start=$(now)
    cp -r "$work/copy" "$dir/copied-by-$tool"
    cp_secs=$(since "$start")
    umount "$dir"

    echo "$tool $find_secs $rss $small_secs $big_secs $cp_secs" >>"$results"
    echo "$tool: find ${find_secs}s (RSS ${rss} MiB), 1,000 small ${small_secs}s, ${mib} MiB ${big_secs}s, cp -r ${cp_secs}s" >&2
done

mkdir -p "$out"
python3 - "$results" "$files" "$mib" >"$out/mount.md" <<'PY'
import sys
rows = [line.split() for line in open(sys.argv[1])]
files, mib = int(sys.argv[2]), int(sys.argv[3])
t = {r[0]: [float(x) for x in r[1:]] for r in rows}
print(f"| tool | `find` of {files:,} files, s | RSS after it, MiB | cold read of 1,000 × 1 KiB, s "
      f"| cold read of {mib} MiB, MiB/s | `cp -r` of 200 × 4 KiB, s |")
print("|---|---:|---:|---:|---:|---:|")
for tool, (find, rss, small, big, cp) in t.items():
    print(f"| {tool} | {find:.2f} | {rss:.0f} | {small:.2f} | {mib / big:.0f} | {cp:.2f} |")
s = t["s3mirror"]
print()
for peer in ("s3fs", "rclone"):
    p = t[peer]
    print(f"s3mirror / {peer}: `find` {s[0] / p[0]:.2f}x the time, RSS {s[1] / p[1]:.2f}x, "
          f"small reads {s[2] / p[2]:.2f}x the time, large read {p[3] / s[3]:.2f}x the throughput, "
          f"`cp -r` {s[4] / p[4]:.2f}x the time.")
PY
cat "$out/mount.md"
