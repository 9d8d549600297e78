#!/usr/bin/env bash
# Runs every test: unit tests, and integration tests against a real Garage server that
# the test harness starts on loopback (Garage is installed first if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/garage-lib.sh
garage_install
# Programs the mount tests run on a mounted bucket.
if ! command -v rsync >/dev/null; then
    apt-get update -qq && apt-get install -y -qq rsync >/dev/null
fi
cargo test --workspace --all-targets --locked "$@"
