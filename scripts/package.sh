#!/usr/bin/env bash
# Builds the Debian package: the binary, its man pages and shell completions (generated
# by the binary from its own argument definitions), the systemd template units and the
# example job configuration. Prints the path of the .deb on stdout.
#
#   bash scripts/package.sh            release build
#   bash scripts/package.sh --dev      from the debug build (quicker; what the tests use)
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0

# A release package keeps its debug symbols apart, in s3mirror-dbgsym_*.ddeb beside it.
profile=release
deb_flags=(--dbgsym)
if [ "${1:-}" = "--dev" ]; then
    # cargo-deb warns that it is meant for release builds; the tests package the debug
    # build they already have rather than build everything again.
    profile=dev
    deb_flags=(--fast --strip)
fi
target_dir=${CARGO_TARGET_DIR:-target}
bin_dir=$target_dir/$([ "$profile" = dev ] && echo debug || echo release)

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
    echo "installing cargo-deb $CARGO_DEB_VERSION..." >&2
    cargo install "cargo-deb@$CARGO_DEB_VERSION" --locked --quiet >&2
fi

cargo build --profile "$profile" --locked --bin s3mirror >&2

# Cargo.toml names these paths relative to the package, whatever the target directory.
assets=target/assets
rm -rf "$assets"
mkdir -p "$assets/man"
for page in "" sync verify plan mount; do
    name=s3mirror${page:+-$page}
    # shellcheck disable=SC2086 # an empty $page is no argument
    "$bin_dir/s3mirror" man $page | gzip -9n >"$assets/man/$name.1.gz"
done
"$bin_dir/s3mirror" completions bash >"$assets/s3mirror.bash"
"$bin_dir/s3mirror" completions zsh >"$assets/_s3mirror"
"$bin_dir/s3mirror" completions fish >"$assets/s3mirror.fish"

cargo deb --no-build --profile "$profile" "${deb_flags[@]}" --output "$target_dir/debian/" >&2
ls -t "$target_dir"/debian/s3mirror_*.deb | head -n 1
