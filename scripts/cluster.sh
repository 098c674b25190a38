#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Issue #15, with real processes: the official Python SDK runs a whole session while the
# load balancer alternates replicas.
#
# Starts PostgreSQL (initdb in a temporary directory, a free loopback port, trust
# authentication; as root it runs as the `postgres` user, like tests/support/postgres.rs),
# three gateway replicas on that store with one cluster key and a call log each, HAProxy
# with the repo's own deploy/haproxy/haproxy.cfg in front of them (round robin, no
# stickiness) (scripts/lib/cluster.sh, shared with scripts/conformance.sh), shopping-service
# and user-service registering through the load balancer, and the conformance fixture
# registered through it twice: conf2025 (--revision 2025) and conf2026 (--revision 2026).
# Then scripts/clients/cluster.py runs one client session of the official Python SDK 2.x
# through the load balancer in each mode, `legacy` (2025-11-25, a session with
# Mcp-Session-Id) and `auto` (server/discover, 2026-07-28): tools, 9 calls of
# getProductById, getUserById, 3 personalized recommendations (shopping-service asks
# user-service through the load balancer in its own session), prompts, resources; then,
# with sampling, elicitation and roots callbacks declared, 4 calls each of the fixture's
# test_sampling, test_elicitation and test_input_required_result_list_roots, whose
# results must carry the callbacks' answers (legacy: conf2025's, asking within the call;
# auto: conf2026's, answering input_required, then conf2025's, whose calls the gateway
# parks on the replica that asked and passes the retries to), and in auto mode
# test_tool_with_logging at the levels warning (no log message) and info (all of them).
#
# After each mode every replica's call log (GET /calls, asked of each replica directly)
# must hold the mode's calls, all of them, and each replica some: the session was served
# by all three. The client's answers must have crossed replicas: in legacy mode relayed
# through the store to the replica that asked (PostgreSQL's count of mcp_answers rows),
# in auto mode each of conf2026's sampling and elicitation calls answered input_required
# by one replica and completed by another (the call logs). Prints a table (mode, cell, result) and the
# calls per replica; exits 1 when a cell fails, 2 when the cluster could not be started.
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
# The tool calls one session of cluster.py makes (the client's) as the call logs count
# them: 13 of the demo services, then a fixture's 3 tools that ask the client, 4 calls
# each: conf2025's in legacy mode; in auto mode conf2026's (each call logged twice: its
# first round, answered input_required, and its retry) and conf2025's (each logged once,
# by the replica where it waited), and test_tool_with_logging 6 times. And the ones
# shopping-service makes for them (getUserPreferences, once per recommendation).
ASKING_CALLS=$((3 * 4))
declare -A CLIENT_CALLS=([legacy]=$((13 + ASKING_CALLS)) [auto]=$((13 + 2 * ASKING_CALLS + ASKING_CALLS + 6)))
SERVICE_CALLS=3
# The cells cluster.py reports per mode (the logging cells in auto mode only).
declare -A CELLS=([legacy]=13 [auto]=18)
# The cells this script adds per mode, from the call logs and the store.
SCRIPT_CELLS=5

log() { printf '== %s\n' "$*"; }
die() {
    printf 'cluster.sh: %s\n' "$*" >&2
    exit 2
}
# shellcheck source=lib/python.sh
source "$ROOT/scripts/lib/python.sh"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/cluster.XXXXXX")"
PIDS=()
# shellcheck source=lib/cluster.sh
source "$ROOT/scripts/lib/cluster.sh"
cluster_exit_traps

now_ms() { python3 -c 'import time; print(int(time.time()*1000))'; }

# --- what it needs
SDK2_PY="$(sdk2_venv | tail -1)"
cluster_tools

log "building"
(cd "$ROOT" && cargo build --quiet --locked -p gateway -p shopping-service -p user-service -p conformance --bins)

# --- PostgreSQL, three gateway replicas on it (a call log each, with arguments and
# results: a 2026-07-28 call's rounds are paired by their arguments), HAProxy in front
pg_start "$WORK"
STORE="$(pg_createdb cluster)"
replicas_start "$REPLICAS" "$STORE" "$CLUSTER_KEY" "$WORK" \
    MCP_BEARER_TOKEN="$TOKEN" GATEWAY_CALL_LOG_STORE="$WORK/calls-%n.db" GATEWAY_CALL_LOG_PAYLOADS=true
haproxy_start "$WORK"

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
# lists HOST:PORT REGEX: whether the tool names (sorted, space-separated) of a sessionless
# tools/list asked of that replica directly match REGEX.
# shellcheck disable=SC2317 # invoked by wait_until
lists() {
    curl -fsS --max-time 5 -X POST "http://$1/mcp" -H "Authorization: Bearer $TOKEN" \
        -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
        -d '{"jsonrpc":"2.0","id":1,"method":"tools/list"}' >"$WORK/tools-$1.json" &&
        [[ "$(json '" ".join(sorted(t["name"] for t in d["result"]["tools"]))' <"$WORK/tools-$1.json")" =~ $2 ]]
}
for gw in "${GW[@]}"; do
    wait_until "$gw to list getProductById and getUserById" 60 lists "$gw" 'getProductById.*getUserById'
done

# --- the conformance fixture, both revisions, registered through the load balancer:
# conf2025 (--revision 2025: asks within the call, in a session) for the legacy mode,
# conf2026 (--revision 2026: answers a 2026-07-28 request with input_required) for auto.
# Their tools collide, so the gateway names them conf2025__test_* and conf2026__test_*.
for rev in 2025 2026; do
    port="$(free_port)"
    cluster_spawn "conf$rev" "$WORK/conf$rev.log" "$BIN/conformance-fixture" --listen "127.0.0.1:$port" --revision "$rev"
    wait_until "conformance-fixture --revision $rev on 127.0.0.1:$port" 30 \
        curl -fsS --max-time 2 "http://127.0.0.1:$port/health"
    code="$(curl -sS -o "$WORK/register-conf$rev.json" -w '%{http_code}' --max-time 30 -X POST "$LB/register" \
        -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        -d "{\"name\":\"conf$rev\",\"url\":\"http://127.0.0.1:$port/mcp\"}")" || code=000
    [[ "$code" == 200 || "$code" == 201 ]] ||
        die "registering conf$rev through the load balancer answered $code: $(cat "$WORK/register-conf$rev.json" 2>/dev/null)"
    log "conformance-fixture --revision $rev on 127.0.0.1:$port, registered through $LB as conf$rev"
done
for gw in "${GW[@]}"; do
    wait_until "$gw to list both fixtures' tools" 60 lists "$gw" 'conf2025__test_sampling.*conf2026__test_sampling'
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
    ((client >= CLIENT_CALLS[$mode] && service >= SERVICE_CALLS))
}
# sessions NAME: the ids of the sessions in the store whose client is NAME (clientInfo).
sessions() {
    psql_at cluster "SELECT id FROM mcp_sessions WHERE init::json->'clientInfo'->>'name' = '$1' ORDER BY id"
}
# cell MODE NAME OK(1|0) DETAIL: one of this script's cells, as cluster.py prints its own.
cell() {
    python3 -c 'import json,sys; print(json.dumps({"client": "sdk2:" + sys.argv[1], "cell": sys.argv[2], "ok": sys.argv[3] == "1", "detail": sys.argv[4]}))' "$@"
}
# answers_relayed: the rows ever written to mcp_answers (a client's answer relayed to the
# replica that asked).
answers_relayed() {
    psql_at cluster "SELECT coalesce(sum(n_tup_ins), 0) FROM pg_stat_user_tables WHERE relname = 'mcp_answers'"
}
declare -A SERVED
shop_session=""
for mode in "${MODES[@]}"; do
    log "mode $mode: the Python SDK 2.x ($PY_SDK2) through $LB"
    since="$(now_ms)"
    relayed_before="$(answers_relayed)"
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
    cell "$mode" "the client's calls, all logged" "$([[ $total_client -eq ${CLIENT_CALLS[$mode]} ]] && echo 1 || echo 0)" \
        "$total_client of ${CLIENT_CALLS[$mode]}" >>"$results"
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
    # Where the fixture's questions were answered.
    if [[ $mode == legacy ]]; then
        # Round robin puts each answer on another replica than the call that asked, which
        # relays it through the store (an mcp_answers row, taken by the asking replica).
        # PostgreSQL's statistics count the rows once the writer reports them (within a
        # second or so of its going idle).
        deadline=$((SECONDS + 10))
        until (($(answers_relayed) - relayed_before >= ASKING_CALLS)) || ((SECONDS >= deadline)); do sleep 0.5; done
        relayed=$(($(answers_relayed) - relayed_before))
        left="$(psql_at cluster "SELECT count(*) FROM mcp_answers")"
        cell "$mode" "answers relayed between replicas via the store" \
            "$([[ $relayed -ge $((ASKING_CALLS / 2)) && $left -eq 0 ]] && echo 1 || echo 0)" \
            "$relayed of the $ASKING_CALLS answers relayed, $left left in the store" >>"$results"
    else
        # Each call that asked: its first round (answered input_required) and its retry
        # (inputResponses, the gateway's sealed requestState) logged by two replicas.
        for n in $(seq 1 "$REPLICAS"); do
            curl -fsS --max-time 5 -H "Authorization: Bearer $TOKEN" "http://${GW[n - 1]}/calls?limit=1000&since=$since" |
                json "'\\n'.join(json.dumps(dict(c, replica=$n)) for c in d['calls'])"
        done >"$WORK/calls-$mode.jsonl"
        read -r ok detail < <(python3 - "$WORK/calls-$mode.jsonl" "$((ASKING_CALLS * 2 / 3))" <<'PY'
import json, sys
path, expected = sys.argv[1], int(sys.argv[2])
rounds = {}
for line in open(path):
    if line.strip():
        c = json.loads(line)
        if c["tool"] in ("conf2026__test_sampling", "conf2026__test_elicitation"):
            key = (c["tool"], json.dumps(c.get("arguments"), sort_keys=True))
            rounds.setdefault(key, []).append(c)
crossed = 0
for calls in rounds.values():
    calls.sort(key=lambda c: c["at"])
    kinds = [(c.get("result") or {}).get("resultType") for c in calls]
    crossed += kinds == ["input_required", "complete"] and calls[0]["replica"] != calls[1]["replica"]
print(int(len(rounds) == expected and crossed == expected),
      f"{crossed} of the {expected} calls of conf2026 test_sampling and test_elicitation: input_required on one replica, completed on another"
      + ("" if len(rounds) == expected else f" ({len(rounds)} calls in the logs)"))
PY
        )
        cell "$mode" "input_required on one replica, retry on another" "$ok" "$detail" >>"$results"
    fi
done

# --- the table, and the verdict
status=0
printf '\n%-7s %-50s %s\n' mode cell result
for mode in "${MODES[@]}"; do
    python3 - "$mode" "$((CELLS[$mode] + SCRIPT_CELLS))" "$WORK/results-$mode.jsonl" <<'PY' || status=1
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
    if [[ "$(wc -l <"$WORK/results-$mode.jsonl")" -lt $((CELLS[$mode] + SCRIPT_CELLS)) ]]; then
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
