#!/usr/bin/env bash
# Issue #15, with real processes: the official Python SDK runs a whole session while the
# load balancer alternates replicas.
#
# Starts PostgreSQL (initdb in a temporary directory, a free loopback port, trust
# authentication; as root it runs as the `postgres` user, like tests/support/postgres.rs),
# three gateway replicas on that store with one cluster key and a call log each, HAProxy
# with the repo's own deploy/haproxy/haproxy.cfg in front of them (round robin, no
# stickiness), and shopping-service and user-service registering through the load
# balancer. Then scripts/clients/cluster.py runs one client session of the official
# Python SDK 2.x through the load balancer in each mode, `legacy` (2025-11-25, a session
# with Mcp-Session-Id) and `auto` (server/discover, 2026-07-28): tools, 9 calls of
# getProductById, getUserById, 3 personalized recommendations (shopping-service asks
# user-service through the load balancer in its own session), prompts, resources.
#
# After each mode every replica's call log (GET /calls, asked of each replica directly)
# must hold the mode's calls, all of them, and each replica some: the session was served
# by all three. Prints a table (mode, cell, result) and the calls per replica; exits 1 when
# a cell fails, 2 when the cluster could not be started.
#
# Needs PostgreSQL's server binaries and haproxy (.ci/run installs both); installs the
# pinned Python SDK (PyPI) when missing, in the same cached venv as scripts/clients.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck disable=SC2034 # read by lib/python.sh
CACHE="${MCP_CLIENTS_CACHE:-$HOME/.cache/mcp-clients}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET_DIR/debug"
TOKEN="cluster-token-0123456789"
CLUSTER_KEY="cluster-script-key-0123456789"
REPLICAS=3
MODES=(legacy auto)
# The tool calls one session of cluster.py makes (the client's), and the ones
# shopping-service makes for them (getUserPreferences, once per recommendation).
CLIENT_CALLS=13
SERVICE_CALLS=3
CELLS=10
# The cells this script adds per mode, from the call logs and the store.
SCRIPT_CELLS=4

log() { printf '== %s\n' "$*"; }
die() {
    printf 'cluster.sh: %s\n' "$*" >&2
    exit 2
}
# shellcheck source=lib/python.sh
source "$ROOT/scripts/lib/python.sh"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/cluster.XXXXXX")"
PIDS=()
PG_DATA=""
pg() { "$@"; }
cleanup() {
    local status=$?
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    # A gateway drains its calls before it exits: 10 s, then SIGKILL.
    local deadline=$((SECONDS + 10))
    for pid in "${PIDS[@]}"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [[ -n "$PG_DATA" && -f "$PG_DATA/postmaster.pid" ]]; then
        pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w -t 20 stop >/dev/null 2>&1 || true
    fi
    if [[ "$status" -ne 0 ]]; then
        for f in "$WORK"/*.log "$WORK"/pg/server.log; do
            [[ -s "$f" ]] || continue
            echo "--- last lines of $(basename "$f")"
            tail -n 25 "$f"
        done
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap "exit 130" INT
trap "exit 143" TERM

# wait_until WHAT SECONDS COMMAND...: runs COMMAND every 0.2 s until it succeeds; dies
# after SECONDS.
wait_until() {
    local what="$1" seconds="$2"
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out after ${seconds} s waiting for $what"
        sleep 0.2
    done
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
now_ms() { python3 -c 'import time; print(int(time.time()*1000))'; }
# json EXPR: evaluates EXPR (Python, with `d` the JSON read from stdin).
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# --- what it needs
SDK2_PY="$(sdk2_venv | tail -1)"
HAPROXY="$(command -v haproxy || echo /usr/sbin/haproxy)"
[[ -x "$HAPROXY" ]] || die "haproxy is needed: apt-get install haproxy (.ci/run does)"
if command -v initdb >/dev/null 2>&1; then
    PG_BIN="$(dirname "$(readlink -f "$(command -v initdb)")")"
else
    PG_BIN="$(find /usr/lib/postgresql -path '*/bin/initdb' 2>/dev/null | sort -V | tail -1 | xargs -r dirname)"
fi
[[ -n "$PG_BIN" && -x "$PG_BIN/initdb" ]] || die "PostgreSQL's initdb is needed: apt-get install postgresql (.ci/run does)"

log "building"
(cd "$ROOT" && cargo build --quiet --locked -p gateway -p shopping-service -p user-service --bins)

# --- PostgreSQL
pg_port="$(free_port)"
mkdir -p "$WORK/pg"
if [[ "$(id -u)" -eq 0 ]]; then
    # PostgreSQL refuses to run as root: its directory is the postgres user's.
    chmod 711 "$WORK"
    chown -R postgres: "$WORK/pg"
    pg() { runuser -u postgres -- "$@"; }
fi
PG_DATA="$WORK/pg/data"
log "PostgreSQL ($PG_BIN) on 127.0.0.1:$pg_port"
pg "$PG_BIN/initdb" -D "$PG_DATA" -U gateway --auth=trust -E UTF8 --no-sync >"$WORK/initdb.log" 2>&1 ||
    die "initdb failed: $(cat "$WORK/initdb.log")"
pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$WORK/pg/server.log" -w -t 30 \
    -o "-p $pg_port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$WORK/pg -c fsync=off -c max_connections=200" \
    start >/dev/null || die "PostgreSQL did not start: $(cat "$WORK/pg/server.log")"
"$PG_BIN/createdb" -h 127.0.0.1 -p "$pg_port" -U gateway cluster || die "createdb failed"
STORE="postgres://gateway:secret@127.0.0.1:${pg_port}/cluster"

# --- three gateway replicas on that store
GW=()
for n in $(seq 1 "$REPLICAS"); do
    port="$(free_port)"
    MCP_BEARER_TOKEN="$TOKEN" GATEWAY_STORE="$STORE" GATEWAY_CLUSTER_KEY="$CLUSTER_KEY" \
        GATEWAY_CALL_LOG_STORE="$WORK/calls-$n.db" \
        "$BIN/gateway" --listen "127.0.0.1:$port" >"$WORK/gateway-$n.log" 2>&1 &
    PIDS+=($!)
    GW+=("127.0.0.1:$port")
done
log "gateway replicas on ${GW[*]}"
live_replicas() {
    [[ "$(curl -fsS --max-time 2 "http://$1/health" | json 'len(d["cluster"]["replicas"])')" == "$REPLICAS" ]]
}
for gw in "${GW[@]}"; do
    wait_until "$gw's /health to list $REPLICAS replicas" 60 live_replicas "$gw"
done

# --- HAProxy, the repo's configuration
lb_addr="127.0.0.1:$(free_port)"
LB="http://$lb_addr"
log "HAProxy (deploy/haproxy/haproxy.cfg) on $lb_addr"
LB_LISTEN="$lb_addr" GATEWAY_1="${GW[0]}" GATEWAY_2="${GW[1]}" GATEWAY_3="${GW[2]}" \
    "$HAPROXY" -db -f "$ROOT/deploy/haproxy/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
PIDS+=($!)
# Ready when the balancer's /health has been answered by every replica (their ids).
: >"$WORK/seen-replicas"
lb_reaches_all() {
    curl -fsS --max-time 2 "$LB/health" | json 'd["cluster"]["replica"]' >>"$WORK/seen-replicas"
    [[ "$(sort -u "$WORK/seen-replicas" | wc -l)" -ge "$REPLICAS" ]]
}
wait_until "the load balancer to reach all $REPLICAS replicas" 30 lb_reaches_all

# --- the demo services, registering through the load balancer
shop_port="$(free_port)"
user_port="$(free_port)"
log "shopping-service on 127.0.0.1:$shop_port and user-service on 127.0.0.1:$user_port, registering through $LB"
MCP_BEARER_TOKEN="$TOKEN" GATEWAY_URL="$LB" SHOPPING_SERVICE_LISTEN="127.0.0.1:$shop_port" \
    "$BIN/shopping-service" >"$WORK/shopping-service.log" 2>&1 &
PIDS+=($!)
MCP_BEARER_TOKEN="$TOKEN" GATEWAY_URL="$LB" USER_SERVICE_LISTEN="127.0.0.1:$user_port" \
    "$BIN/user-service" >"$WORK/user-service.log" 2>&1 &
PIDS+=($!)
# A sessionless tools/list asked of one replica directly.
lists_both() {
    curl -fsS --max-time 5 -X POST "http://$1/mcp" -H "Authorization: Bearer $TOKEN" \
        -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
        -d '{"jsonrpc":"2.0","id":1,"method":"tools/list"}' >"$WORK/tools-$1.json" &&
        [[ "$(json '" ".join(t["name"] for t in d["result"]["tools"])' <"$WORK/tools-$1.json")" =~ getProductById.*getUserById|getUserById.*getProductById ]]
}
for gw in "${GW[@]}"; do
    wait_until "$gw to list getProductById and getUserById" 60 lists_both "$gw"
done

# --- the client sessions, one per mode
# calls_since REPLICA SINCE_MS: "CLIENT SERVICE", the calls of the client's tools and of
# getUserPreferences (shopping-service's session) the replica logged since SINCE_MS.
calls_since() {
    curl -fsS --max-time 5 -H "Authorization: Bearer $TOKEN" "http://$1/calls?limit=1000&since=$2" |
        json '"%d %d" % (sum(c["tool"] != "getUserPreferences" for c in d["calls"]), sum(c["tool"] == "getUserPreferences" for c in d["calls"]))'
}
logged_all() {
    local since="$1" client=0 service=0 c s
    for gw in "${GW[@]}"; do
        read -r c s < <(calls_since "$gw" "$since")
        client=$((client + c))
        service=$((service + s))
    done
    ((client >= CLIENT_CALLS && service >= SERVICE_CALLS))
}
# sessions NAME: the ids of the sessions in the store whose client is NAME (clientInfo).
sessions() {
    "$PG_BIN/psql" -h 127.0.0.1 -p "$pg_port" -U gateway -d cluster -At -c \
        "SELECT id FROM mcp_sessions WHERE init::json->'clientInfo'->>'name' = '$1' ORDER BY id"
}
# cell MODE NAME OK(1|0) DETAIL: one of this script's cells, as cluster.py prints its own.
cell() {
    python3 -c 'import json,sys; print(json.dumps({"client": "sdk2:" + sys.argv[1], "cell": sys.argv[2], "ok": sys.argv[3] == "1", "detail": sys.argv[4]}))' "$@"
}
declare -A SERVED
shop_session=""
for mode in "${MODES[@]}"; do
    log "mode $mode: the Python SDK 2.x ($PY_SDK2) through $LB"
    since="$(now_ms)"
    results="$WORK/results-$mode.jsonl"
    timeout 180 "$SDK2_PY" "$ROOT/scripts/clients/cluster.py" "$mode" "$LB/mcp" "$TOKEN" \
        >"$results" 2>"$WORK/client-$mode.log" || true
    # The call log is written behind the answers: wait (bounded) until all are in.
    deadline=$((SECONDS + 10))
    until logged_all "$since" || ((SECONDS >= deadline)); do sleep 0.2; done
    total_client=0
    total_service=0
    replicas_used=0
    service_replicas=0
    line=""
    for n in $(seq 1 "$REPLICAS"); do
        read -r c s < <(calls_since "${GW[n - 1]}" "$since")
        SERVED["$mode|$n"]="$c $s"
        total_client=$((total_client + c))
        total_service=$((total_service + s))
        if ((c > 0)); then replicas_used=$((replicas_used + 1)); fi
        if ((s > 0)); then service_replicas=$((service_replicas + 1)); fi
        line+="replica $n: $c+$s  "
    done
    log "mode $mode: calls logged (client's+shopping-service's) ${line}"
    cell "$mode" "the client's calls, all logged" "$([[ $total_client -eq $CLIENT_CALLS ]] && echo 1 || echo 0)" \
        "$total_client of $CLIENT_CALLS" >>"$results"
    cell "$mode" "every replica served the session" "$([[ $replicas_used -eq $REPLICAS ]] && echo 1 || echo 0)" \
        "$replicas_used of $REPLICAS replicas" >>"$results"
    # shopping-service's client session, opened at its first recommendation, serves all
    # of them: one row in the store, the same in every mode.
    rows="$(sessions shopping-service | xargs)"
    read -r -a ids <<<"$rows"
    one_session=0
    if [[ ${#ids[@]} -eq 1 && (-z "$shop_session" || "$shop_session" == "${ids[0]}") ]]; then one_session=1; fi
    shop_session="${ids[0]:-}"
    cell "$mode" "shopping-service's one session crossed replicas" \
        "$([[ $total_service -eq $SERVICE_CALLS && $service_replicas -ge 2 && $one_session -eq 1 ]] && echo 1 || echo 0)" \
        "$total_service getUserPreferences calls on $service_replicas replicas; its sessions in the store: ${rows:-none}" >>"$results"
    # The client's own session: ended in the store by its DELETE (legacy), never opened (auto).
    rows="$(sessions "cluster-py-$mode" | xargs)"
    cell "$mode" "$([[ $mode == legacy ]] && echo "its DELETE ended the session in the store" || echo "no session in the store")" \
        "$([[ -z "$rows" ]] && echo 1 || echo 0)" "${rows:+left in the store: $rows}" >>"$results"
done

# --- the table, and the verdict
status=0
printf '\n%-7s %-50s %s\n' mode cell result
for mode in "${MODES[@]}"; do
    python3 - "$mode" "$((CELLS + SCRIPT_CELLS))" "$WORK/results-$mode.jsonl" <<'PY' || status=1
import json, sys
mode, expected, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = [json.loads(line) for line in open(path) if line.strip()]
failed = 0
for r in rows:
    verdict = ("pass" + (f" ({r['detail']})" if r["detail"] else "")) if r["ok"] else f"FAIL: {r['detail']}"
    failed += not r["ok"]
    print(f"{mode:<7} {r['cell']:<50} {verdict}")
if len(rows) < expected:
    print(f"mode {mode}: only {len(rows)} cells reported ({expected} expected)")
sys.exit(1 if failed or len(rows) < expected else 0)
PY
    if [[ "$(wc -l <"$WORK/results-$mode.jsonl")" -lt $((CELLS + SCRIPT_CELLS)) ]]; then
        echo "the client's errors (mode $mode):"
        tail -40 "$WORK/client-$mode.log"
    fi
done
printf '\n%-7s' "calls"
for n in $(seq 1 "$REPLICAS"); do printf ' %-28s' "replica $n (${GW[n - 1]})"; done
printf '\n'
for mode in "${MODES[@]}"; do
    printf '%-7s' "$mode"
    for n in $(seq 1 "$REPLICAS"); do
        read -r c s <<<"${SERVED["$mode|$n"]}"
        printf ' %-28s' "$c client, $s service"
    done
    printf '\n'
done
exit "$status"
