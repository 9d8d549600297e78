#!/usr/bin/env bash
# Builds the Debian package from the debug build, installs it on this machine with
# dpkg (root), and checks what it installed: the binary, the man pages, the shell
# completions and the systemd units. Removes the package again unless it was installed
# before. Installs man-db and systemd from Debian when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
    echo "package test: $*" >&2
    exit 1
}

if [ "$(id -u)" != 0 ]; then
    [ "${CI:-}" != true ] || fail "installing the package needs root"
    echo "package test skipped: installing the package needs root" >&2
    exit 0
fi

missing=()
command -v man >/dev/null || missing+=(man-db)
command -v systemd-analyze >/dev/null || missing+=(systemd)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

deb=$(bash scripts/package.sh --dev)
[ -f "$deb" ] || fail "no package built"
dpkg-deb --info "$deb" >/dev/null

if ! dpkg-query -W -f '${Status}' s3mirror 2>/dev/null | grep -q "install ok installed"; then
    trap 'dpkg --purge s3mirror >/dev/null' EXIT
fi
dpkg -i "$deb" >/dev/null

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
[ "$(/usr/bin/s3mirror --version)" = "s3mirror $version" ] || fail "s3mirror --version: $(/usr/bin/s3mirror --version)"
[ "$(command -v s3mirror)" = /usr/bin/s3mirror ] || fail "s3mirror is not /usr/bin/s3mirror on PATH"

# The pages render, and the subcommand pages name the environment variables.
man -P cat s3mirror 2>/dev/null | grep -q 's3mirror-sync(1)' || fail "man s3mirror"
for page in sync verify plan mount; do
    man -P cat "s3mirror-$page" >/dev/null 2>&1 || fail "man s3mirror-$page"
done
man -P cat s3mirror-sync 2>/dev/null | grep -q S3MIRROR_THREADS || fail "man s3mirror-sync lacks S3MIRROR_THREADS"

# Completions: in place, and the bash one defines a completion for s3mirror.
for file in /usr/share/bash-completion/completions/s3mirror \
    /usr/share/zsh/vendor-completions/_s3mirror \
    /usr/share/fish/vendor_completions.d/s3mirror.fish; do
    [ -s "$file" ] || fail "missing completion $file"
done
bash -c '. /usr/share/bash-completion/completions/s3mirror && complete -p s3mirror' >/dev/null ||
    fail "the bash completion does not load"
grep -q 'metrics-file' /usr/share/fish/vendor_completions.d/s3mirror.fish || fail "fish completion"

# The units, as systemd reads an instance of them; any complaint fails.
[ -f /etc/s3mirror/example.conf ] || fail "no /etc/s3mirror/example.conf"
grep -qx /etc/s3mirror/example.conf /var/lib/dpkg/info/s3mirror.conffiles || fail "example.conf is no conffile"
complaints=$(systemd-analyze verify s3mirror@example.service s3mirror@example.timer 2>&1) ||
    fail "systemd-analyze verify: $complaints"
[ -z "$complaints" ] || fail "systemd-analyze verify: $complaints"

# The example job's ARGS are a valid command line: with no server to reach, the run
# ends with 3 (could not proceed), not 2 (invalid arguments).
status=0
(
    # Read as systemd reads an environment file, not as a shell script.
    ARGS=$(sed -n 's/^ARGS=//p' /etc/s3mirror/example.conf)
    export AWS_ACCESS_KEY_ID=none AWS_SECRET_ACCESS_KEY=none AWS_EC2_METADATA_DISABLED=true
    # shellcheck disable=SC2086 # ARGS is split at spaces, as systemd does
    s3mirror sync $ARGS --dry-run --quiet --max-retries 0 --endpoint-url http://127.0.0.1:9 2>/dev/null
) || status=$?
[ "$status" = 3 ] || fail "the example configuration's ARGS: exit $status"

echo "package test: $deb installs and works"
