#!/usr/bin/env bash
# Runs s3mirror and its peers side by side on one local Garage server, behind a latency
# proxy, on the same data with the same concurrency, and writes a table and a plot.
#
#   benches/compare.sh [--objects N] [--noop-objects N] [--listing-objects N]
#                      [--flat-objects N] [--flat-listing-objects N]
#                      [--large N] [--large-mib N] [--tools "s3mirror rclone aws s3sync"]
#                      [--throttle-objects N] [--rate-limit N] [--seed-objects N] [--seed-max-kib N]
#                      [--seed-large-mib N] [--slowdown-share P] [--restore-rounds N]
#                      [--out DIR]
#
# Workloads (each tool writes to its own fresh bucket):
#   upload   N x 4 KiB files, local -> bucket          at 20 ms / 8 transfers, and 0 ms / 64
#   copy     those objects, bucket -> bucket            at 20 ms / 8, and 0 ms / 64
#   no-op    re-sync of --noop-objects unchanged files  at 20 ms / 64 (s3mirror also with
#            --list-parallelism 1, to show what listing common prefixes in parallel gains)
#   large    --large files of --large-mib MiB, upload   at 0 ms / 8
#            (s3mirror also on one core with taskset, as s3mirror-1-core, when there are more)
#   check-large  re-sync of those files by content (s3mirror --compare etag, rclone --checksum)
#            at 0 ms / 8: every byte hashed, nothing sent, so the client's cores are the bound
#   download-large  the two large files of the seed-like set (below), bucket -> local directory,
#            at 0 ms / 8, every tool, s3mirror also on one core, and rclone-durable: rclone
#            followed by `sync`, since rclone returns before its files are on disk
#   upload-rate-limited, restore, restore-slowdown, restore-direct  throttling, s3mirror and rclone: see the
#            section "throttling" below (the restore also with rclone-durable); restore and
#            restore-direct run in --restore-rounds rounds (default 3), the tools in a new
#            order each round
#   restore-md5-direct  restore-direct from a bucket that rclone filled (no stored CRCs)
#   listing-no-op  no-op over --listing-objects empty files, s3mirror alone, for peak memory,
#                  beside the same no-op over the small files
#   no-op-flat     the no-op over --flat-objects files in one directory (one flat prefix)
#                  at 20 ms / 64, beside the no-op over 100 directories (0 skips it)
#   listing-no-op-flat  no-op between two buckets of --flat-listing-objects keys in one
#                  prefix, s3mirror alone, for peak memory, beside the same no-op over
#                  --flat-objects keys (0 skips it)
#
# Writes DIR/results.csv, DIR/table.md and DIR/plot.png (default DIR: bench-results/latest).
# A workload measured in several rounds is shown as the median of its rounds. Beside each
# tool's own CPU, results.csv has the machine's: every CPU's busy time over the run, the
# server, the proxy and the kernel's writeback threads included.
# Ratios between tools measured in one run are the figures to quote; absolute times depend
# on the machine (the server and the proxy share its CPUs). Each download keeps its files
# until the last has run: the defaults need about 60 GB free (it stops first if there is less).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/garage-lib.sh

objects=10000 noop_objects=100000 listing_objects=1000000 large=4 large_mib=256
flat_objects=100000 flat_listing_objects=1000000
throttle_objects=5000 rate_limit=400 seed_objects=10000 seed_max_kib=4096 seed_large_mib=300 slowdown_share=0.1 restore_rounds=3
tools="s3mirror rclone aws s3sync" out=bench-results/latest
while [ $# -gt 0 ]; do
    case $1 in
        --objects) objects=$2; shift 2 ;;
        --noop-objects) noop_objects=$2; shift 2 ;;
        --listing-objects) listing_objects=$2; shift 2 ;;
        --flat-objects) flat_objects=$2; shift 2 ;;
        --flat-listing-objects) flat_listing_objects=$2; shift 2 ;;
        --large) large=$2; shift 2 ;;
        --large-mib) large_mib=$2; shift 2 ;;
        --throttle-objects) throttle_objects=$2; shift 2 ;;
        --rate-limit) rate_limit=$2; shift 2 ;;
        --seed-objects) seed_objects=$2; shift 2 ;;
        --seed-max-kib) seed_max_kib=$2; shift 2 ;;
        --seed-large-mib) seed_large_mib=$2; shift 2 ;;
        --slowdown-share) slowdown_share=$2; shift 2 ;;
        --restore-rounds) restore_rounds=$2; shift 2 ;;
        --tools) tools=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

AWSCLI_VERSION=1.46.3
S3SYNC_VERSION=1.62.4
MATPLOTLIB_VERSION=3.9.2

# --- tools -----------------------------------------------------------------------------
need_apt=()
command -v rclone >/dev/null || need_apt+=(rclone)
[ -x /usr/bin/time ] || need_apt+=(time)
if [ ${#need_apt[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
python3 -c "import matplotlib" 2>/dev/null || pip install -q "matplotlib==$MATPLOTLIB_VERSION"
tools_dir=${BENCH_TOOLS_DIR:-$HOME/.cache/s3mirror-bench}
if [[ " $tools " == *" aws "* ]] && [ ! -x "$tools_dir/awscli/bin/aws" ]; then
    python3 -m venv "$tools_dir/awscli"
    "$tools_dir/awscli/bin/pip" install -q "awscli==$AWSCLI_VERSION"
fi
if [[ " $tools " == *" s3sync "* ]] && [ ! -x "$tools_dir/s3sync/bin/s3sync" ]; then
    echo "installing s3sync $S3SYNC_VERSION with cargo (a one-time build of several minutes)..." >&2
    cargo install "s3sync@$S3SYNC_VERSION" --locked --quiet --root "$tools_dir/s3sync"
fi
garage_install
cargo build --release --quiet -p s3mirror -p faultproxy
s3mirror=$PWD/target/release/s3mirror
proxy_bin=$PWD/target/release/faultproxy

work=$(mktemp -d -t s3mirror-bench-XXXXXX)
proxy_pid=
stop_proxy() {
    if [ -n "$proxy_pid" ]; then
        kill "$proxy_pid" 2>/dev/null || true
        wait "$proxy_pid" 2>/dev/null || true
        proxy_pid=
    fi
}
trap 'stop_proxy; garage_stop; rm -rf "$work"' EXIT
GARAGE_DB_ENGINE=lmdb garage_start "$work/garage"
garage_client_env
# rclone's Go SDK refuses AWS_CA_BUNDLE with a plain-http endpoint; no tool needs it here.
unset AWS_CA_BUNDLE
server=${GARAGE_ENDPOINT#http://}

# start_proxy MS: a fresh proxy (fresh request counter) adding MS milliseconds per request,
# and the faults in the array proxy_faults if a workload sets it (faultproxy's options).
start_proxy() {
    stop_proxy
    "$proxy_bin" --upstream "$server" --latency "${1}ms" ${proxy_faults[@]+"${proxy_faults[@]}"} \
        >"$work/proxy.addr" 2>"$work/proxy.log" &
    proxy_pid=$!
    until [ -s "$work/proxy.addr" ]; do sleep 0.05; done
    endpoint="http://$(cat "$work/proxy.addr")"
    : >"$work/proxy.addr"
}

# --- data ------------------------------------------------------------------------------
make_files() { # DIR COUNT BYTES
    python3 - "$@" <<'PY'
import os, sys
root, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    d = os.path.join(root, f"d{i % 100:02d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:07d}"), "wb") as f:
        f.write(os.urandom(size))
PY
}
echo "generating data..." >&2
make_files "$work/small" "$objects" 4096
make_files "$work/noop" "$noop_objects" 16
mkdir -p "$work/large"
for i in $(seq 1 "$large"); do head -c "$((large_mib << 20))" /dev/urandom >"$work/large/big$i"; done

# --- how each tool is run ----------------------------------------------------------------
rclone_env() {
    export RCLONE_CONFIG_G_TYPE=s3 RCLONE_CONFIG_G_PROVIDER=Other RCLONE_CONFIG_G_ENDPOINT=$endpoint \
        RCLONE_CONFIG_G_REGION=$GARAGE_REGION RCLONE_CONFIG_G_ACCESS_KEY_ID=$GARAGE_ACCESS_KEY \
        RCLONE_CONFIG_G_SECRET_ACCESS_KEY=$GARAGE_SECRET_KEY
}
aws_config() { # THREADS
    cat >"$work/aws-config" <<CFG
[default]
region = $GARAGE_REGION
s3 =
    max_concurrent_requests = $1
    addressing_style = path
CFG
}
# command_for TOOL THREADS SRC DST: SRC/DST are a local path or bucket/prefix (with a /).
command_for() {
    local tool=$1 threads=$2 src=$3 dst=$4 s3src s3dst
    if [[ $src == /* ]]; then s3src=$src; else s3src=s3://$src; fi
    if [[ $dst == /* ]]; then s3dst=$dst; else s3dst=s3://$dst; fi
    case $tool in
        s3mirror) cmd=("$s3mirror" "$s3src" "$s3dst" --threads "$threads" -q --endpoint-url "$endpoint") ;;
        s3mirror-1-core)
            cmd=(taskset -c 0 "$s3mirror" "$s3src" "$s3dst" --threads "$threads" -q --endpoint-url "$endpoint")
            ;;
        s3mirror-sequential-listing)
            cmd=("$s3mirror" "$s3src" "$s3dst" --threads "$threads" -q --endpoint-url "$endpoint"
                --list-parallelism 1)
            ;;
        rclone)
            rclone_env
            [[ $src == /* ]] || src=g:$src
            [[ $dst == /* ]] || dst=g:$dst
            cmd=(rclone copy "$src" "$dst" --transfers "$threads" --checkers "$threads")
            ;;
        rclone-durable)
            # rclone leaves what it wrote in the page cache; this is its run with `sync` after,
            # for downloads, where s3mirror returns only once every file is durable.
            command_for rclone "$threads" "$3" "$4"
            cmd=(sh -c '"$@" && sync' sh "${cmd[@]}")
            ;;
        aws)
            aws_config "$threads"
            cmd=(env AWS_CONFIG_FILE="$work/aws-config" "$tools_dir/awscli/bin/aws" s3 sync "$s3src" "$s3dst"
                --endpoint-url "$endpoint" --only-show-errors)
            ;;
        s3sync)
            cmd=("$tools_dir/s3sync/bin/s3sync" --worker-size "$threads")
            [[ $src == /* ]] || cmd+=(--source-endpoint-url "$endpoint" --source-force-path-style)
            [[ $dst == /* ]] || cmd+=(--target-endpoint-url "$endpoint" --target-force-path-style)
            [[ $src == /* || $dst == /* ]] || cmd+=(--server-side-copy)
            cmd+=("$s3src" "$s3dst")
            ;;
    esac
}

echo "latency_ms,threads,workload,tool,objects,bytes,wall_s,cpu_s,peak_rss_kib,requests,machine_cpu_s" \
    >"$work/results.csv"
# busy_seconds: the CPU time all CPUs have spent busy since boot (/proc/stat: user, nice,
# system, irq and softirq; not idle, iowait or time stolen by the host).
busy_seconds() {
    awk -v hz="$(getconf CLK_TCK)" '$1 == "cpu" { print ($2 + $3 + $4 + $7 + $8) / hz; exit }' /proc/stat
}
# measure LATENCY THREADS WORKLOAD TOOL OBJECTS BYTES SRC DST [EXTRA...]
# With direct=1 the tool talks to the server itself (no proxy, no request count).
direct=0
measure() {
    local latency=$1 threads=$2 workload=$3 tool=$4 n=$5 bytes=$6 src=$7 dst=$8
    shift 8
    if [ "$direct" = 1 ]; then
        endpoint=$GARAGE_ENDPOINT
        : >"$work/proxy.log"
    else
        start_proxy "$latency"
    fi
    command_for "$tool" "$threads" "$src" "$dst"
    sync
    echo "  $workload $tool (${latency} ms, $threads)" >&2
    local busy_before
    busy_before=$(busy_seconds)
    if ! /usr/bin/time -f "%e %U %S %M" -o "$work/time" "${cmd[@]}" "$@" >"$work/out" 2>&1; then
        echo "$tool $workload failed:" >&2
        tail -20 "$work/out" >&2
        stop_proxy
        return 0
    fi
    local busy
    busy=$(awk -v a="$busy_before" -v b="$(busy_seconds)" 'BEGIN { printf "%.2f", b - a }')
    stop_proxy
    local wall user sys rss requests
    read -r wall user sys rss <"$work/time"
    requests=$(sed -n 's/^faultproxy: \([0-9]*\) requests.*/\1/p' "$work/proxy.log")
    echo "$latency,$threads,$workload,$tool,$n,$bytes,$wall,$(awk -v u="$user" -v s="$sys" 'BEGIN{print u+s}'),$rss,$requests,$busy" \
        >>"$work/results.csv"
}

# fill BUCKET DIR: objects for the copy and no-op workloads, written once by s3mirror.
fill() {
    start_proxy 0
    "$s3mirror" "$2" "s3://$1/data" --threads 64 -q --endpoint-url "$endpoint"
    stop_proxy
}

small_bytes=$((objects * 4096))
for setting in "20 8" "0 64"; do
    read -r latency threads <<<"$setting"
    for tool in $tools; do
        up=up-$tool-$latency copy=copy-$tool-$latency
        garage_bucket "$up"
        garage_bucket "$copy"
        measure "$latency" "$threads" upload "$tool" "$objects" "$small_bytes" "$work/small" "$up/data/"
        measure "$latency" "$threads" copy "$tool" "$objects" "$small_bytes" "$up/data/" "$copy/data/"
    done
done

garage_bucket noop
fill noop "$work/noop"
no_op_tools=$tools
[[ " $tools " == *" s3mirror "* ]] && no_op_tools="$tools s3mirror-sequential-listing"
for tool in $no_op_tools; do
    measure 20 64 no-op "$tool" "$noop_objects" 0 "$work/noop" noop/data/
done

# With 2 or more CPUs, s3mirror also runs on one (taskset) for the large-file workloads, to
# show what the second core brings.
large_tools=$tools
[[ " $tools " == *" s3mirror "* ]] && [ "$(nproc)" -ge 2 ] && large_tools="$tools s3mirror-1-core"
for tool in $large_tools; do
    garage_bucket "large-$tool"
    measure 0 8 large "$tool" "$large" "$((large * large_mib << 20))" "$work/large" "large-$tool/data/"
done
# check-large: the same re-sync by content, against the bucket each tool wrote (the AWS CLI
# cannot compare content). Every byte is read and hashed and nothing is sent.
for tool in $large_tools; do
    case $tool in
        s3mirror*) check=(--compare etag) ;;
        rclone) check=(--checksum) ;;
        *) continue ;;
    esac
    measure 0 8 check-large "$tool" "$large" "$((large * large_mib << 20))" "$work/large" \
        "large-$tool/data/" "${check[@]}"
done

# --- throttling ---------------------------------------------------------------------------
# upload-rate-limited  --throttle-objects x 4 KiB files, local -> bucket, through a proxy that
#                      answers 503 SlowDown beyond --rate-limit requests/s (a token bucket, as S3
#                      throttles a prefix), at 20 ms / 64
# restore              a seed-like set, bucket -> empty local directory, at 0 ms / 64: --seed-objects
#                      files of log-uniform sizes 1 B to --seed-max-kib KiB, and two files of
#                      --seed-large-mib MiB
# restore-slowdown     the same restore through a proxy answering --slowdown-share of the requests,
#                      drawn at random, with 503 SlowDown
# restore-direct       the restore with no proxy between the tool and the server
# restore-md5-direct   restore-direct from the same files uploaded by rclone: MD5s, no CRCs
# s3mirror and rclone only; DIR/throttling.md gives the ratios (uploads/s against the limit, the
# restore through SlowDowns against the restore without). Requests/s, refusals included, shows
# how each tool spends the limit: rclone asks HeadObject before each PutObject.
make_seed_like() { # DIR COUNT MAX_BYTES LARGE_MIB
    python3 - "$@" <<'PY'
import math, os, random, sys
root, n, top, large_mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(42)
for i in range(n):
    d = os.path.join(root, f"d{i % 100:02d}")
    os.makedirs(d, exist_ok=True)
    size = int(math.exp(rng.uniform(0, math.log(top))))
    with open(os.path.join(d, f"f{i:07d}"), "wb") as f:
        f.write(os.urandom(size))
for name in ("large-1", "large-2"):
    with open(os.path.join(root, name), "wb") as f:
        for _ in range(large_mib):
            f.write(os.urandom(1 << 20))
PY
}

# restore_dir: a new empty directory for one download, in $restored. Each download gets its
# own and none is removed until the last has run: on a file system that discards freed
# blocks, the journal commits that follow a large delete are slow, and whichever tool ran
# next, if it syncs, would pay for the one before.
restore_dir() {
    restores=$((restores + 1))
    restored="$work/restored/$restores"
    mkdir -p "$restored"
}

# forget_cached DIR: drops DIR's files from the page cache once they are on disk, so that
# the downloads that follow find as much free memory as the first.
forget_cached() {
    sync
    python3 - "$1" <<'PY'
import os, sys
for root, _, files in os.walk(sys.argv[1]):
    for name in files:
        fd = os.open(os.path.join(root, name), os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
PY
}

# files_and_bytes DIR: the number of files below DIR and the sum of their sizes.
files_and_bytes() {
    find "$1" -type f -printf '%s\n' | awk '{ n++; b += $1 } END { printf "%d %.0f\n", n, b }'
}

# restore_in_rounds WORKLOAD BUCKET DIRECT: the restore of BUCKET by every restore tool, in
# --restore-rounds rounds, the order of the tools turned by one place each round: every tool
# comes first, in the middle and last equally often when the rounds are a multiple of the
# tools. A restore that syncs pays for the state of the disk and of memory that the runs
# before it leave, which one run alone would put on whichever tool came first. With DIRECT 1
# the tools talk to the server itself, else through a proxy adding nothing. The downloads
# are removed after the last round, and the removal synced, so that the discards of the
# freed blocks do not fall on the next run; each call starts the order one place further on.
rounds_started=0
restore_in_rounds() {
    local workload=$1 bucket=$2 round i count=${#restore_tools[@]}
    direct=$3
    for ((round = 0; round < restore_rounds; round++)); do
        for ((i = 0; i < count; i++)); do
            tool=${restore_tools[$(((i + round + rounds_started) % count))]}
            restore_dir
            measure 0 64 "$workload" "$tool" "$((seed_objects + 2))" "$seed_bytes" "$bucket/data/" "$restored"
            [ "$(files_and_bytes "$restored")" = "$(files_and_bytes "$work/seed")" ] ||
                echo "  $tool $workload: the restored directory differs from the source" >&2
            forget_cached "$restored"
        done
    done
    direct=0
    rounds_started=$((rounds_started + 1))
    rm -rf "$work/restored"
    sync
}

throttling_workloads() {
    local throttle_tools=() tool seed_bytes
    for tool in s3mirror rclone; do
        [[ " $tools " == *" $tool "* ]] && throttle_tools+=("$tool")
    done
    [ ${#throttle_tools[@]} -gt 0 ] || return 0
    echo "generating data for the throttling workloads..." >&2
    make_files "$work/throttle" "$throttle_objects" 4096
    make_seed_like "$work/seed" "$seed_objects" "$((seed_max_kib << 10))" "$seed_large_mib"
    seed_bytes=$(files_and_bytes "$work/seed" | cut -d' ' -f2)
    local restore_tools=("${throttle_tools[@]}")
    [[ " $tools " == *" rclone "* ]] && restore_tools+=(rclone-durable)
    local download_tools=$large_tools
    [[ " $tools " == *" rclone "* ]] && download_tools="$download_tools rclone-durable"
    # Every download is kept until its group has run (restore_dir), so the room they need is
    # known before the first: the large downloads, a restore through SlowDowns for each tool,
    # and one group of restore rounds.
    local downloads need free
    downloads=$((${#throttle_tools[@]} + restore_rounds * ${#restore_tools[@]}))
    need=$((downloads * seed_bytes + $(wc -w <<<"$download_tools") * (2 * seed_large_mib << 20)))
    free=$(($(df --output=avail -k "$work" | tail -1) << 10))
    if [ "$need" -gt "$free" ]; then
        echo "the downloads need $((need >> 30)) GiB and $work has $((free >> 30)) GiB free:" \
            "free some room, or lower --restore-rounds or --seed-objects" >&2
        exit 1
    fi
    garage_bucket seed
    fill seed "$work/seed"

    # The large files alone, bucket -> empty local directory, as one download of large files.
    mkdir -p "$work/seed-large"
    ln "$work/seed"/large-* "$work/seed-large/"
    garage_bucket seed-large
    fill seed-large "$work/seed-large"
    local restores=0 restored
    for tool in $download_tools; do
        restore_dir
        measure 0 8 download-large "$tool" 2 "$((2 * seed_large_mib << 20))" seed-large/data/ "$restored"
        forget_cached "$restored"
    done

    for tool in "${throttle_tools[@]}"; do
        garage_bucket "rate-limited-$tool"
        proxy_faults=(--rate-limit "$rate_limit")
        measure 20 64 upload-rate-limited "$tool" "$throttle_objects" "$((throttle_objects * 4096))" \
            "$work/throttle" "rate-limited-$tool/data/"
        proxy_faults=(--slowdown "$slowdown_share")
        restore_dir
        measure 0 64 restore-slowdown "$tool" "$((seed_objects + 2))" "$seed_bytes" seed/data/ "$restored"
        [ "$(files_and_bytes "$restored")" = "$(files_and_bytes "$work/seed")" ] ||
            echo "  $tool restore-slowdown: the restored directory differs from the source" >&2
        forget_cached "$restored"
        proxy_faults=()
    done
    # The restore through the proxy (adding nothing), in rounds; the table shows each tool's
    # median, and the throttling table compares the restore through SlowDowns with it.
    restore_in_rounds restore seed 0
    # The same restore straight to the server: the proxy costs every tool the same per
    # request, which hides part of the difference between them.
    restore_in_rounds restore-direct seed 1
    # The same rounds from a bucket written by rclone, as users bring them: MD5 ETags (and
    # rclone's md5chksum on the large files), no stored CRC, so every tool checks every byte
    # by MD5. s3mirror's own uploads store a CRC32C, which its restores check instead, as they
    # check the CRC64NVME S3 stores for every object.
    if [[ " $tools " == *" rclone "* ]]; then
        garage_bucket seed-md5
        endpoint=$GARAGE_ENDPOINT
        command_for rclone 64 "$work/seed" seed-md5/data/
        "${cmd[@]}" -q
        restore_in_rounds restore-md5-direct seed-md5 1
    fi

    mkdir -p "$out"
    awk -F, -v limit="$rate_limit" -v share="$slowdown_share" '
        $3 == "upload-rate-limited" && !($4 in seen) { seen[$4]; order[++n] = $4 }
        $3 == "upload-rate-limited" { rate[$4] = $5 / $7; asked[$4] = $10 / $7 }
        $3 == "restore" { clean[$4] = clean[$4] " " $7 }
        $3 == "restore-slowdown" { slow[$4] = $7 }
        # The median of the values in a space-separated list.
        function median(list,    v, n, i, j, t) {
            n = split(list, v, " ")
            for (i = 2; i <= n; i++)
                for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
            return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
        }
        END {
            print "| tool | uploads/s at " limit " requests/s | of the limit | requests/s | restore s | restore through " \
                share * 100 " % SlowDown s | ratio |"
            print "|---|---:|---:|---:|---:|---:|---:|"
            for (i = 1; i <= n; i++) {
                t = order[i]
                printf "| %s | %.0f | %.0f %% | %.0f | %.2f | %.2f | %.2fx |\n", t, rate[t], 100 * rate[t] / limit,
                    asked[t], median(clean[t]), slow[t], clean[t] ? slow[t] / median(clean[t]) : 0
            }
        }' "$work/results.csv" >"$out/throttling.md"
    cat "$out/throttling.md" >&2
}
throttling_workloads

if [ "$listing_objects" -gt 0 ]; then
    echo "generating $listing_objects files and objects for the listing workload..." >&2
    make_files "$work/many" "$listing_objects" 0
    garage_bucket many
    fill many "$work/many"
    # The no-op over the 10,000 small files is the baseline the million is compared with.
    measure 0 64 "listing-no-op" s3mirror "$objects" 0 "$work/small" up-s3mirror-0/data/
    measure 0 64 "listing-no-op" s3mirror "$listing_objects" 0 "$work/many" many/data/
    measure 0 64 "listing-no-op" s3mirror-sequential-listing "$listing_objects" 0 "$work/many" many/data/
fi

# --- flat prefix -------------------------------------------------------------------------
# Keys at one level, with no `/` below the prefix: the layout where listing in parallel
# cannot follow common prefixes and must split the key space itself.
make_flat_files() { # DIR COUNT BYTES: COUNT files in DIR itself
    python3 - "$@" <<'PY'
import os, sys
root, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(root, exist_ok=True)
body = b"x" * size
for i in range(n):
    with open(os.path.join(root, f"f{i:07d}"), "wb") as f:
        f.write(body)
PY
}

# flat_noop: the no-op over one flat prefix, every no-op tool, as the 100-directory no-op.
flat_noop() {
    echo "generating $flat_objects files in one directory..." >&2
    make_flat_files "$work/flat" "$flat_objects" 16
    garage_bucket noop-flat
    fill noop-flat "$work/flat"
    for tool in $no_op_tools; do
        measure 20 64 no-op-flat "$tool" "$flat_objects" 0 "$work/flat" noop-flat/data/
    done
}

# flat_listing_memory: peak memory of a no-op between two buckets of one flat prefix each
# (both sides listed by s3mirror, no local walk), at --flat-objects and at
# --flat-listing-objects keys.
flat_listing_memory() {
    local n dir
    for n in "$flat_objects" "$flat_listing_objects"; do
        echo "filling two buckets with $n keys in one prefix..." >&2
        dir=$work/flat-empty-$n
        make_flat_files "$dir" "$n" 0
        garage_bucket "flat-$n"
        garage_bucket "flat-$n-copy"
        fill "flat-$n" "$dir"
        rm -rf "$dir"
        start_proxy 0
        "$s3mirror" "s3://flat-$n/data" "s3://flat-$n-copy/data" --threads 64 -q --endpoint-url "$endpoint"
        stop_proxy
        for tool in s3mirror s3mirror-sequential-listing; do
            measure 0 64 listing-no-op-flat "$tool" "$n" 0 "flat-$n/data/" "flat-$n-copy/data/"
        done
    done
}

if [ "$flat_objects" -gt 0 ]; then
    flat_noop
    if [ "$flat_listing_objects" -gt 0 ]; then
        flat_listing_memory
    fi
fi

mkdir -p "$out"
cp "$work/results.csv" "$out/results.csv"
python3 benches/plot.py "$out" "Garage $GARAGE_VERSION (lmdb) on loopback behind faultproxy, $(nproc) CPUs"
cat "$out/table.md"
echo
echo "results in $out/ (results.csv, table.md, plot.png)"
