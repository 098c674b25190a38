# A gateway cluster on this machine, for the scripts that run one (scripts/cluster.sh,
# scripts/conformance.sh): PostgreSQL (initdb in a temporary directory, a free loopback
# port, trust authentication; as root it runs as the `postgres` user, like
# tests/support/postgres.rs), gateway replicas on one of its databases with one cluster
# key, and HAProxy with the repo's own deploy/haproxy/haproxy.cfg in front of them (round
# robin, no stickiness).
#
# Sourced; the caller defines BIN (the gateway's directory), ROOT, log, die, free_port
# (prints a free loopback port) and
#   cluster_spawn NAME LOGFILE CMD...   runs CMD in the background, output to LOGFILE,
#                                       as one of the caller's processes (it stops them)
# and calls pg_stop when it exits (PostgreSQL runs as a daemon, not one of them).
# Every wait is bounded.
# shellcheck shell=bash

# For callers that keep their processes in PIDS and their files in WORK (cluster.sh,
# ha.sh): a free loopback port, cluster_spawn, and cluster_cleanup STATUS for their EXIT
# trap; a caller with its own (conformance.sh) defines them before sourcing this.
if ! declare -F free_port >/dev/null; then
    free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
fi
if ! declare -F cluster_spawn >/dev/null; then
    cluster_spawn() {
        local logfile="$2"
        shift 2
        "$@" >"$logfile" 2>&1 &
        PIDS+=($!)
    }
fi

# cluster_cleanup STATUS: stops the caller's processes (PIDS, and its background jobs;
# a gateway drains its calls before it exits: 10 s, then SIGKILL) and PostgreSQL, prints
# the last lines of every log in WORK when STATUS is a failure (not an interrupt, 130),
# and deletes WORK.
cluster_cleanup() {
    local status="$1" pid f
    # shellcheck disable=SC2046 # one job id a word
    for pid in "${PIDS[@]}" $(jobs -p); do kill "$pid" 2>/dev/null || true; done
    local deadline=$((SECONDS + 10))
    for pid in "${PIDS[@]}"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    pg_stop
    if [[ "$status" -ne 0 && "$status" -ne 130 ]]; then
        for f in "$WORK"/*.log "$WORK"/pg/server.log; do
            [[ -s "$f" ]] || continue
            echo "--- last lines of $(basename "$f")"
            tail -n 25 "$f"
        done
    fi
    rm -rf "$WORK"
}

# cluster_exit_traps: on exit (or INT, TERM), cluster_cleanup with the exit status.
cluster_exit_traps() {
    trap 'cluster_on_exit' EXIT
    trap "exit 130" INT
    trap "exit 143" TERM
}
# shellcheck disable=SC2317 # invoked by the EXIT trap
cluster_on_exit() {
    local status=$?
    cluster_cleanup "$status"
    exit "$status"
}

PG_BIN=""
PG_DATA=""
PG_PORT=""
HAPROXY=""
# GW: the replicas' host:port; LB: the load balancer's URL (http://host:port).
GW=()
LB=""

# cluster_tools: finds PostgreSQL's server binaries (PG_BIN) and haproxy (HAPROXY), or dies.
cluster_tools() {
    HAPROXY="$(command -v haproxy || echo /usr/sbin/haproxy)"
    [[ -x "$HAPROXY" ]] || die "haproxy is needed: apt-get install haproxy (.ci/run does)"
    if command -v initdb >/dev/null 2>&1; then
        PG_BIN="$(dirname "$(readlink -f "$(command -v initdb)")")"
    else
        PG_BIN="$(find /usr/lib/postgresql -path '*/bin/initdb' 2>/dev/null | sort -V | tail -1 | xargs -r dirname)"
    fi
    [[ -n "$PG_BIN" && -x "$PG_BIN/initdb" ]] ||
        die "PostgreSQL's initdb is needed: apt-get install postgresql (.ci/run does)"
}

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

# json EXPR: evaluates EXPR (Python, with `d` the JSON read from stdin).
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

pg() { "$@"; }

# pg_start DIR: PostgreSQL with its data and socket in DIR/pg, on a free loopback port
# (PG_PORT). As root, DIR's parents must let the postgres user through (a directory of
# mktemp -d is made so).
pg_start() {
    local dir="$1"
    PG_PORT="$(free_port)"
    mkdir -p "$dir/pg"
    if [[ "$(id -u)" -eq 0 ]]; then
        # PostgreSQL refuses to run as root: its directory is the postgres user's.
        chmod 711 "$dir"
        chown -R postgres: "$dir/pg"
        pg() { runuser -u postgres -- "$@"; }
    fi
    PG_DATA="$dir/pg/data"
    log "PostgreSQL ($PG_BIN) on 127.0.0.1:$PG_PORT"
    pg "$PG_BIN/initdb" -D "$PG_DATA" -U gateway --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 ||
        die "initdb failed: $(cat "$dir/initdb.log")"
    pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$dir/pg/server.log" -w -t 30 \
        -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir/pg -c fsync=off -c max_connections=200" \
        start >/dev/null || die "PostgreSQL did not start: $(cat "$dir/pg/server.log")"
}

# pg_stop: stops PostgreSQL (immediately) if pg_start started it.
pg_stop() {
    if [[ -n "$PG_DATA" && -f "$PG_DATA/postmaster.pid" ]]; then
        pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w -t 20 stop >/dev/null 2>&1 || true
    fi
}

# pg_createdb NAME: a new database; prints its URL, a gateway's store.
pg_createdb() {
    "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U gateway "$1" || die "createdb $1 failed"
    echo "postgres://gateway:secret@127.0.0.1:${PG_PORT}/$1"
}

# psql_at DATABASE SQL: the query's rows, unaligned, one a line.
psql_at() {
    "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U gateway -d "$1" -At -c "$2"
}

# replicas_start N STORE KEY LOGDIR [VAR=VALUE...]: N gateway replicas on STORE with
# cluster key KEY, each with the environment VAR=VALUE... (`%n` in a value: the replica's
# number), logs in LOGDIR/gateway-<n>.log; their addresses in GW. Waits until each one's
# /health lists N live replicas.
replicas_start() {
    local n="$1" store="$2" key="$3" logdir="$4" i port
    shift 4
    GW=()
    for i in $(seq 1 "$n"); do
        port="$(free_port)"
        cluster_spawn "gateway-$i" "$logdir/gateway-$i.log" \
            env GATEWAY_STORE="$store" GATEWAY_CLUSTER_KEY="$key" "${@//%n/$i}" \
            "$BIN/gateway" --listen "127.0.0.1:$port"
        GW+=("127.0.0.1:$port")
    done
    log "gateway replicas on ${GW[*]}"
    local gw
    for gw in "${GW[@]}"; do
        wait_until "$gw's /health to list $n replicas" 60 live_replicas "$gw" "$n"
    done
}

# live_replicas HOST:PORT N: whether that replica's /health lists N live replicas.
live_replicas() {
    [[ "$(curl -fsS --max-time 2 "http://$1/health" | json 'len(d["cluster"]["replicas"])')" == "$2" ]]
}

# haproxy_start LOGDIR [HOST:PORT]: HAProxy with deploy/haproxy/haproxy.cfg in front of
# GW (up to three), on HOST:PORT (default: a free loopback port) (LB); its log in
# LOGDIR/haproxy.log. Waits until its /health has been answered by every replica (their
# ids).
haproxy_start() {
    local logdir="$1" addr="${2:-127.0.0.1:$(free_port)}"
    LB="http://$addr"
    log "HAProxy (deploy/haproxy/haproxy.cfg) on $addr"
    cluster_spawn haproxy "$logdir/haproxy.log" \
        env LB_LISTEN="$addr" GATEWAY_1="${GW[0]}" ${GW[1]:+GATEWAY_2="${GW[1]}"} ${GW[2]:+GATEWAY_3="${GW[2]}"} \
        "$HAPROXY" -db -f "$ROOT/deploy/haproxy/haproxy.cfg"
    : >"$logdir/seen-replicas"
    wait_until "the load balancer to reach all ${#GW[@]} replicas" 30 lb_reaches_all "$logdir/seen-replicas"
}

# lb_reaches_all FILE: asks the load balancer's /health once, adds the replica that
# answered to FILE; whether FILE names every replica.
lb_reaches_all() {
    curl -fsS --max-time 2 "$LB/health" | json 'd["cluster"]["replica"]' >>"$1"
    [[ "$(sort -u "$1" | wc -l)" -ge "${#GW[@]}" ]]
}
