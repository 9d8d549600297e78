#!/usr/bin/env bash
# Runs s3mirror and rclone side by side on the same local Garage server, same data,
# same concurrency, and prints a table of wall time, objects/s, client CPU and peak RSS.
#
#   benches/compare.sh [--objects N] [--size BYTES] [--threads N] [--out DIR]
#
# Writes DIR/results.csv, DIR/table.md and DIR/plot.png (default DIR: bench-results/latest).
# Each tool writes to a fresh bucket. Ratios between tools measured in one run are the
# figures to quote; absolute times depend on the machine (the server shares its CPUs).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/garage-lib.sh

objects=5000 size=4096 threads=32 out=bench-results/latest
while [ $# -gt 0 ]; do
    case $1 in
        --out) out=$2; shift 2 ;;
        --objects) objects=$2; shift 2 ;;
        --size) size=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

need_apt=()
command -v rclone >/dev/null || need_apt+=(rclone)
[ -x /usr/bin/time ] || need_apt+=(time)
if [ ${#need_apt[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
python3 -c "import matplotlib" 2>/dev/null || pip install -q "matplotlib==3.9.2"
garage_install
cargo build --release --quiet
s3mirror=$PWD/target/release/s3mirror

work=$(mktemp -d -t s3mirror-bench-XXXXXX)
trap 'garage_stop; rm -rf "$work"' EXIT
garage_start "$work/garage"
garage_client_env
# rclone's Go SDK refuses AWS_CA_BUNDLE with a plain-http endpoint; no tool needs it here.
unset AWS_CA_BUNDLE
export RCLONE_CONFIG_GARAGE_TYPE=s3 RCLONE_CONFIG_GARAGE_PROVIDER=Other \
    RCLONE_CONFIG_GARAGE_ENDPOINT=$GARAGE_ENDPOINT RCLONE_CONFIG_GARAGE_REGION=$GARAGE_REGION \
    RCLONE_CONFIG_GARAGE_ACCESS_KEY_ID=$GARAGE_ACCESS_KEY RCLONE_CONFIG_GARAGE_SECRET_ACCESS_KEY=$GARAGE_SECRET_KEY

echo "generating $objects files of $size bytes..." >&2
python3 - "$work/files" "$objects" "$size" <<'PY'
import os, sys
root, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    d = os.path.join(root, f"d{i % 100:02d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:07d}"), "wb") as f:
        f.write(os.urandom(size))
PY

results=()
# measure TOOL WORKLOAD COMMAND...: runs the command once under /usr/bin/time.
measure() {
    local tool=$1 workload=$2
    shift 2
    sync
    /usr/bin/time -f "%e %U %S %M" -o "$work/time" "$@" >"$work/out" 2>&1 || {
        echo "$tool $workload failed:" >&2
        tail -20 "$work/out" >&2
        return 1
    }
    read -r wall user sys rss <"$work/time"
    results+=("$workload|$tool|$wall|$user|$sys|$rss")
}

for tool in s3mirror rclone; do
    garage_bucket "up-$tool"
    garage_bucket "copy-$tool"
done
measure s3mirror upload "$s3mirror" "$work/files" s3://up-s3mirror/data --threads "$threads" -q
measure rclone upload rclone copy "$work/files" garage:up-rclone/data --transfers "$threads" --checkers "$threads"
measure s3mirror copy "$s3mirror" s3://up-s3mirror/data s3://copy-s3mirror/data --threads "$threads" -q
measure rclone copy rclone copy garage:up-rclone/data garage:copy-rclone/data --transfers "$threads" --checkers "$threads"
measure s3mirror no-op "$s3mirror" "$work/files" s3://up-s3mirror/data --threads "$threads" -q
measure rclone no-op rclone copy "$work/files" garage:up-rclone/data --transfers "$threads" --checkers "$threads"

mkdir -p "$out"
title="$objects objects of $size bytes, $threads concurrent transfers, Garage $GARAGE_VERSION on loopback, $(nproc) CPUs"
echo "workload,tool,wall_s,objects_per_s,cpu_s,cpu_ms_per_object,peak_rss_mib" >"$out/results.csv"
for row in "${results[@]}"; do
    IFS='|' read -r workload tool wall user sys rss <<<"$row"
    awk -v w="$workload" -v t="$tool" -v wall="$wall" -v u="$user" -v s="$sys" -v rss="$rss" -v n="$objects" \
        'BEGIN { printf "%s,%s,%.2f,%.0f,%.2f,%.3f,%.1f\n", w, t, wall, n / wall, u + s, (u + s) * 1000 / n, rss / 1024 }'
done >>"$out/results.csv"
{
    echo "$title"
    echo
    echo "| workload | tool | wall s | objects/s | CPU s (user+sys) | CPU ms/object | peak RSS MiB |"
    echo "|---|---|---:|---:|---:|---:|---:|"
    tail -n +2 "$out/results.csv" | awk -F, '{ printf "| %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7 }'
} >"$out/table.md"
python3 benches/plot.py "$out/results.csv" "$out/plot.png" "$title"
echo
cat "$out/table.md"
echo
echo "results in $out/ (results.csv, table.md, plot.png)"
