#!/usr/bin/env bash
# Builds s3mirror and runs a real mirror against a local Garage server it starts on
# loopback: sample files -> bucket -> second bucket -> local directory, then a re-run
# that finds nothing to do. No AWS account is needed; everything is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/garage-lib.sh

garage_install
cargo build --release --quiet
s3mirror=$PWD/target/release/s3mirror

work=$(mktemp -d -t s3mirror-demo-XXXXXX)
trap 'garage_stop; rm -rf "$work"' EXIT
garage_start "$work/garage"
garage_client_env
garage_bucket demo-source
garage_bucket demo-backup

echo "== sample files in $work/files"
mkdir -p "$work/files/photos/2024" "$work/files/docs/ünïcödé" "$work/files/logs"
for i in $(seq 1 200); do head -c $((i * 97)) /dev/urandom > "$work/files/photos/2024/img-$i.jpg"; done
for i in $(seq 1 50); do echo "report $i" > "$work/files/docs/ünïcödé/report $i.txt"; done
head -c $((8 * 1024 * 1024)) /dev/urandom > "$work/files/logs/big.log"
: > "$work/files/empty"

run() {
    echo
    echo "\$ s3mirror $*"
    "$s3mirror" "$@"
}
run "$work/files" s3://demo-source/files --threads 32
run s3://demo-source/files s3://demo-backup/daily --threads 32
run s3://demo-backup/daily "$work/restored" --threads 32
echo
echo "== restored tree identical to the sample files:"
diff -r "$work/files" "$work/restored" && echo "yes, byte for byte"
run "$work/files" s3://demo-source/files
