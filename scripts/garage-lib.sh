# Shell helpers to install and run a throwaway single-node Garage server on loopback.
# Sourced by scripts/demo.sh and benches/compare.sh; the Rust tests have their own harness.

GARAGE_VERSION=2.5.0
GARAGE_ACCESS_KEY=GK0123456789abcdef01234567
GARAGE_SECRET_KEY=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
GARAGE_REGION=garage-local

# Installs the pinned Garage with cargo unless it is already on PATH or in ~/.cargo/bin.
garage_install() {
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
    if command -v garage >/dev/null && garage --version 2>/dev/null | grep -q "$GARAGE_VERSION"; then
        return
    fi
    echo "installing garage $GARAGE_VERSION with cargo (a one-time build of several minutes)..." >&2
    cargo install "garage@$GARAGE_VERSION" --locked --quiet
}

# garage_start DIR: starts a server with its data in DIR and sets GARAGE_ENDPOINT.
# The server is stopped by garage_stop (call it from an EXIT trap).
garage_start() {
    local dir=$1 port rpc_port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    rpc_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    mkdir -p "$dir"
    cat > "$dir/garage.toml" <<TOML
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "${GARAGE_DB_ENGINE:-sqlite}"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$GARAGE_SECRET_KEY"

[s3_api]
s3_region = "$GARAGE_REGION"
api_bind_addr = "127.0.0.1:$port"
TOML
    GARAGE_DEFAULT_ACCESS_KEY=$GARAGE_ACCESS_KEY GARAGE_DEFAULT_SECRET_KEY=$GARAGE_SECRET_KEY RUST_LOG=warn \
        garage -c "$dir/garage.toml" server --single-node --default-access-key >"$dir/server.log" 2>&1 &
    GARAGE_PID=$!
    GARAGE_CONFIG="$dir/garage.toml"
    GARAGE_ENDPOINT="http://127.0.0.1:$port"
    local tries=0
    until garage -c "$GARAGE_CONFIG" key allow --create-bucket "$GARAGE_ACCESS_KEY" >/dev/null 2>&1; do
        tries=$((tries + 1))
        if [ "$tries" -gt 150 ]; then
            echo "garage did not start; its log:" >&2
            cat "$dir/server.log" >&2
            return 1
        fi
        sleep 0.2
    done
    export GARAGE_ENDPOINT
}

garage_stop() {
    if [ -n "${GARAGE_PID:-}" ]; then
        kill "$GARAGE_PID" 2>/dev/null || true
        wait "$GARAGE_PID" 2>/dev/null || true
        GARAGE_PID=
    fi
}

# garage_bucket NAME: creates a bucket the default key can use.
garage_bucket() {
    garage -c "$GARAGE_CONFIG" bucket create "$1" >/dev/null
    garage -c "$GARAGE_CONFIG" bucket allow --read --write --owner "$1" --key "$GARAGE_ACCESS_KEY" >/dev/null
}

# Environment for S3 clients talking to this server.
garage_client_env() {
    export AWS_ACCESS_KEY_ID=$GARAGE_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$GARAGE_SECRET_KEY AWS_REGION=$GARAGE_REGION
    export AWS_ENDPOINT_URL=$GARAGE_ENDPOINT
    unset AWS_PROFILE AWS_SESSION_TOKEN
}
