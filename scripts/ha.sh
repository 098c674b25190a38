#!/usr/bin/env bash
# Several gateways on this machine, without Docker: the stack of docker-compose.ha.yml
# from Debian's packages and this workspace's binaries. PostgreSQL (a throwaway cluster
# in a temporary directory, on a free loopback port; as root it runs as the `postgres`
# user), two gateway replicas on it with one cluster key, HAProxy with the repo's own
# deploy/haproxy/haproxy.cfg where the single gateway would be (127.0.0.1:3001, so the
# README's curl commands reach it), and shopping-service and user-service registering
# through the load balancer.
#
#   scripts/ha.sh            runs until Ctrl-C, then stops everything and deletes the data
#   scripts/ha.sh --check    starts it (the load balancer on a free port), proves it
#                            through the load balancer, stops it; exit 0 when it works (CI)
#
# The check: both services' tools listed by every replica; the README's first commands
# (tools/list, tools/call getProductById) through the load balancer; a registration
# through one replica served by the other. HA_LISTEN sets the load balancer's address;
# MCP_BEARER_TOKEN and GATEWAY_CLUSTER_KEY are passed on (development defaults
# otherwise, as in the compose file). Needs PostgreSQL's server binaries and haproxy
# (apt-get install postgresql haproxy; .ci/run installs both).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET_DIR/debug"
CHECK=false
case "${1:-}" in
--check) CHECK=true ;;
"") ;;
*)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac
TOKEN="${MCP_BEARER_TOKEN:-mcp-token-123}"
CLUSTER_KEY="${GATEWAY_CLUSTER_KEY:-dev-only-insecure-cluster-key-change-me}"

log() { printf '== %s\n' "$*"; }
die() {
    printf 'ha.sh: %s\n' "$*" >&2
    exit 2
}
WORK="$(mktemp -d "${TMPDIR:-/tmp}/ha.XXXXXX")"
PIDS=()
# shellcheck source=lib/cluster.sh
source "$ROOT/scripts/lib/cluster.sh"
cluster_exit_traps

cluster_tools
log "building"
(cd "$ROOT" && cargo build --quiet --locked -p gateway -p shopping-service -p user-service --bins)

pg_start "$WORK"
STORE="$(pg_createdb gateway)"
replicas_start 2 "$STORE" "$CLUSTER_KEY" "$WORK" MCP_BEARER_TOKEN="$TOKEN"
if $CHECK; then
    haproxy_start "$WORK" "${HA_LISTEN:-}"
else
    haproxy_start "$WORK" "${HA_LISTEN:-127.0.0.1:3001}"
fi

shop_port="$(free_port)"
user_port="$(free_port)"
log "shopping-service on 127.0.0.1:$shop_port and user-service on 127.0.0.1:$user_port, registering through $LB"
cluster_spawn shopping-service "$WORK/shopping-service.log" \
    env MCP_BEARER_TOKEN="$TOKEN" GATEWAY_URL="$LB" SHOPPING_SERVICE_LISTEN="127.0.0.1:$shop_port" \
    "$BIN/shopping-service"
cluster_spawn user-service "$WORK/user-service.log" \
    env MCP_BEARER_TOKEN="$TOKEN" GATEWAY_URL="$LB" USER_SERVICE_LISTEN="127.0.0.1:$user_port" \
    "$BIN/user-service"

# rpc URL METHOD PARAMS: a sessionless JSON-RPC request's answer.
rpc() {
    curl -fsS --max-time 10 -X POST "$1/mcp" -H "Authorization: Bearer $TOKEN" \
        -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
        -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"$2\",\"params\":$3}"
}
# lists URL TOOL...: whether tools/list at URL names every TOOL.
# shellcheck disable=SC2317 # invoked by wait_until
lists() {
    local url="$1" names
    shift
    names="$(rpc "$url" tools/list '{}' | json '" ".join(t["name"] for t in d["result"]["tools"])')" || return 1
    for tool in "$@"; do [[ " $names " == *" $tool "* ]] || return 1; done
}
for gw in "${GW[@]}"; do
    wait_until "both services' tools on $gw" 60 lists "http://$gw" getProductById getUserById
done
log "ready: the load balancer on $LB (token $TOKEN), replicas on ${GW[*]}, store $STORE"

if ! $CHECK; then
    log "Ctrl-C stops it all"
    # In the background, so Ctrl-C is handled at once (bash runs a trap only after
    # the foreground command ends).
    while true; do
        sleep 3600 &
        wait $!
    done
fi

# --- the check
fails=0
check() {
    if "${@:2}"; then
        printf '  %-60s pass\n' "$1"
    else
        printf '  %-60s FAIL\n' "$1"
        fails=$((fails + 1))
    fi
}
# shellcheck disable=SC2317 # invoked by check
product_through_lb() {
    rpc "$LB" tools/call '{"name":"getProductById","arguments":{"id":"1"}}' |
        json 'd["result"]["isError"] is False and "name" in str(d["result"])' | grep -qx True
}
# shellcheck disable=SC2317 # invoked by check
registered_on_one_served_by_other() {
    local status
    status="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 -X POST "http://${GW[0]}/register" \
        -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        -d "{\"name\":\"again\",\"url\":\"http://127.0.0.1:$shop_port/mcp\",\"auth\":{\"bearer\":\"$TOKEN\"}}")"
    [[ "$status" == 201 ]] && wait_until "the registration on ${GW[1]}" 10 lists "http://${GW[1]}" again__getProductById
}
check "tools/list through the load balancer names both services' tools" lists "$LB" getProductById getUserById
check "tools/call getProductById through the load balancer" product_through_lb
check "registered through replica 1, served by replica 2" registered_on_one_served_by_other
if [[ "$fails" -ne 0 ]]; then
    echo "ha.sh: $fails check(s) failed" >&2
    exit 1
fi
log "the stack of several gateways works"
