#!/usr/bin/env bash
# Property-based testing of the whole HTTP API against its own spec with schemathesis.
#
# Builds the server, starts it on free ports with a fresh SQLite database in a temp dir (or
# the database given, see below), creates an admin with the CLI, and runs schemathesis (pinned
# in .ci/requirements-schemathesis.txt, installed into a venv under the cargo target dir) against
# the served /openapi.json, with the configuration in .ci/schemathesis/schemathesis.toml and
# the auth and fixture hooks in .ci/schemathesis/hooks.py. Exits non-zero on any failure.
#
# Environment: ST_MAX_EXAMPLES (default 100 per operation and phase), ST_SEED (default fixed
# so CI is repeatable), ST_REPORT_DIR (where the JUnit and NDJSON reports go),
# IOTBIND_SCHEMATHESIS_DATABASE_URL (a fresh, empty database to run against instead of the
# SQLite file, e.g. postgres://postgres@127.0.0.1:5432/iotbind_schemathesis; the caller
# creates it, the script migrates it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
VENV="$TARGET_DIR/schemathesis-venv"
REQUIREMENTS="$ROOT/.ci/requirements-schemathesis.txt"
MAX_EXAMPLES="${ST_MAX_EXAMPLES:-100}"
SEED="${ST_SEED:-20261121}"

# The venv is rebuilt only when the pinned requirements change.
if [ ! -x "$VENV/bin/schemathesis" ] || ! cmp -s "$REQUIREMENTS" "$VENV/requirements.txt"; then
    echo "installing schemathesis into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
    cp "$REQUIREMENTS" "$VENV/requirements.txt"
fi

cargo build --quiet --bin iotbind
BIN="$TARGET_DIR/debug/iotbind"

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# Two free ports from the kernel: HTTP and the embedded broker (1883 may be taken).
read -r HTTP_PORT MQTT_PORT < <("$VENV/bin/python" - <<'PY'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
PY
)
BASE_URL="http://127.0.0.1:$HTTP_PORT"

# The broker hooks are served, with a secret the hooks send as the bearer for their two
# operations, so they are tested as a broker calls them.
BROKER_HOOK_SECRET="st-hooks-$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
export IOTBIND_BROKER_HOOK_SECRET="$BROKER_HOOK_SECRET"

# Development mode: the fake WeChat API the hooks register through. Its operations are in the
# served spec (tag Development) and get tested too, except `faults`, which would make the
# hooks' own logins fail or stall for up to a minute.
unset IOTBIND_WECHAT_SECRET IOTBIND_WECHAT_API_BASE IOTBIND_JWT_SECRET
export IOTBIND_ENV=development
export IOTBIND_HTTP_ADDR="127.0.0.1:$HTTP_PORT"
export IOTBIND_MQTT_URL=embedded
export IOTBIND_MQTT_LISTEN="127.0.0.1:$MQTT_PORT"
export IOTBIND_DATABASE_URL="${IOTBIND_SCHEMATHESIS_DATABASE_URL:-sqlite://$WORK/iotbind.db?mode=rwc}"
# Keep the dev JWT secret (generated and kept beside the database in development) out of the
# checkout.
cd "$WORK"

"$BIN" migrate >"$WORK/migrate.log" 2>&1
ADMIN_USERNAME="st_admin"
ADMIN_PASSWORD="st-admin-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
printf '%s\n' "$ADMIN_PASSWORD" | "$BIN" user create --username "$ADMIN_USERNAME" --admin \
    >"$WORK/user.log" 2>&1 || { cat "$WORK/user.log" >&2; exit 1; }

"$BIN" serve >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
ready=""
for _ in $(seq 1 100); do
    # Python rather than curl: the venv is the one tool this script knows is there.
    if "$VENV/bin/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
        "$BASE_URL/health/ready" >/dev/null 2>&1; then ready=1; break; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
    sleep 0.2
done
if [ -z "$ready" ]; then
    echo "the server did not become ready; its log:" >&2
    cat "$WORK/server.log" >&2
    exit 1
fi

REPORT_DIR="${ST_REPORT_DIR:-$TARGET_DIR/schemathesis-report}"
mkdir -p "$REPORT_DIR"
status=0
IOTBIND_ST_BASE_URL="$BASE_URL" \
IOTBIND_ST_MQTT_PORT="$MQTT_PORT" \
IOTBIND_ST_ADMIN_USERNAME="$ADMIN_USERNAME" \
IOTBIND_ST_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
IOTBIND_ST_BROKER_HOOK_SECRET="$BROKER_HOOK_SECRET" \
SCHEMATHESIS_HOOKS="$ROOT/.ci/schemathesis/hooks.py" \
    "$VENV/bin/schemathesis" --config-file "${ST_CONFIG:-$ROOT/.ci/schemathesis/schemathesis.toml}" \
    run "$BASE_URL/openapi.json" \
    --exclude-operation-id dev_wechat_faults \
    --max-examples "$MAX_EXAMPLES" \
    --seed "$SEED" \
    --report junit,ndjson --report-dir "$REPORT_DIR" \
    --no-color || status=$?

# A 5xx is logged by the server with its cause: show those lines to whoever reads the failure.
if grep -q '"level":"ERROR"\|ERROR' "$WORK/server.log"; then
    echo "server errors logged during the run:" >&2
    grep 'ERROR' "$WORK/server.log" | tail -n 20 >&2
fi
exit "$status"
