#!/usr/bin/env bash
# Runs every test: unit tests, integration tests against a real Garage server (and a
# one-node Slurm cluster) that the test harness starts on loopback, then the Debian
# package test. Installs what they need first when missing: Garage, Python's Prometheus
# text parser and moto's S3 server, and as root Slurm, munge, man-db, systemd, rsync and s3fs from Debian.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/garage-lib.sh
garage_install
# Python packages, pinned: Prometheus's text parser checks the metrics file, and moto's
# S3 server stands in for the AWS APIs Garage lacks (storage classes, restores, tags).
pip_pin() {
    if ! python3 -c "import importlib.metadata as m; assert m.version('$1') == '$2'" 2>/dev/null; then
        python3 -m pip install --quiet --disable-pip-version-check "$1${3:-}==$2"
    fi
}
pip_pin prometheus-client 0.26.0
pip_pin moto 5.2.5 '[server]'

# Debian packages the tests use: Slurm for the cluster test, man and systemd-analyze for
# the package test, programs the mount tests run on a mounted bucket (rsync), and
# s3fs-fuse to check that what either mount writes (modes, times, links) shows the same
# through the other.
debian=()
for tool in slurmctld:slurm-wlm slurmd:slurm-wlm sbatch:slurm-wlm munged:munge \
    man:man-db systemd-analyze:systemd rsync:rsync s3fs:s3fs; do
    command -v "${tool%%:*}" >/dev/null || debian+=("${tool#*:}")
done
if [ ${#debian[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${debian[@]}" >/dev/null
    else
        echo "note: not root, so ${debian[*]} cannot be installed; the tests that need them are skipped" >&2
    fi
fi

cargo test --workspace --all-targets --locked "$@"
if [ $# -eq 0 ]; then
    bash scripts/package-test.sh
fi
