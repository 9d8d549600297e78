#!/usr/bin/env bash
# Runs every test: unit tests, and integration tests against a real Garage server that
# the test harness starts on loopback (Garage is installed first if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/garage-lib.sh
garage_install
# Programs the mount tests run on a mounted bucket, and s3fs-fuse to check that what
# either mount writes (modes, times, links) shows the same through the other.
need=()
command -v rsync >/dev/null || need+=(rsync)
command -v s3fs >/dev/null || need+=(s3fs)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo test --workspace --all-targets --locked "$@"
