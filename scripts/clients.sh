#!/usr/bin/env bash
# The clients people use, through the gateway, cell by cell: the official Python SDK 2.x
# (modes auto, legacy and 2026-07-28), fastmcp 4.x (auto, legacy), the official Python
# SDK 1.x, the official TypeScript SDK 1.x (the MCP Inspector CLI runs in
# scripts/conformance.sh; rmcp's client in the Rust end-to-end tests). Each lists the
# tools, calls one and reads its structured content, reads a resource, gets a prompt, and
# answers a sampling and an elicitation request of the backend's during a call. The
# Python SDK 1.x's stdio client does the same through `gateway stdio` (the bridge a
# desktop client runs), cells reported as client `sdk1-stdio`.
#
# The gateway fronts the conformance fixture (resources, prompts, sampling and
# elicitation tools) and shopping-service (structured content; it speaks 2026-07-28).
# The matrix runs twice: with the fixture as a 2025-era backend (`--revision 2025`: a
# session, questions asked mid-call) and as a 2026-07-28 one (`input_required`), so
# every client meets both upstream eras.
#
# Prints the matrix and exits 1 when a cell fails that is expected to pass. Cells
# expected to fail are listed in EXPECTED_FAILURES with the reason; one of them passing
# is reported too (the list is then out of date) and also fails the run.
#
# Installs what it needs when missing, cached under $HOME: Python venvs with the pinned
# packages (PyPI), Node.js 22 and the TypeScript SDK (npm registry).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
NODE_MAJOR="22"
CACHE="${MCP_CLIENTS_CACHE:-$HOME/.cache/mcp-clients}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET_DIR/debug"
TOKEN="clients-token-0123456789"
TS_SDK="@modelcontextprotocol/sdk@1.32.2"

# Cells expected to fail today, with the reason (era|client:mode|cell).
declare -A EXPECTED_FAILURES=(
)

log() { printf '== %s\n' "$*"; }
die() {
    printf 'clients.sh: %s\n' "$*" >&2
    exit 2
}
# shellcheck source=lib/node.sh
source "$ROOT/scripts/lib/node.sh"
# shellcheck source=lib/python.sh
source "$ROOT/scripts/lib/python.sh"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/clients.XXXXXX")"
PIDS=()
cleanup() {
    local status=$?
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT

ensure_node
SDK2_PY="$(sdk2_venv | tail -1)"
SDK1_PY="$(venv sdk1 "$PY_SDK1" | tail -1)"
TS_DIR="$CACHE/ts-sdk"
if [[ ! -f "$TS_DIR/.ready" ]] || [[ "$(cat "$TS_DIR/.ready")" != "$TS_SDK" ]]; then
    log "installing $TS_SDK into $TS_DIR"
    rm -rf "$TS_DIR" && mkdir -p "$TS_DIR"
    PATH="$(dirname "$NODE"):$PATH" npm_quiet install --prefix "$TS_DIR" "$TS_SDK"
    echo "$TS_SDK" >"$TS_DIR/.ready"
fi

log "building"
(cd "$ROOT" && cargo build --quiet --locked -p gateway -p shopping-service -p conformance --bins)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
gw_port="$(free_port)"
shop_port="$(free_port)"
gateway="http://127.0.0.1:${gw_port}"
MCP_BEARER_TOKEN="$TOKEN" "$BIN/gateway" --listen "127.0.0.1:${gw_port}" --store "$WORK/gw.db" \
    >"$WORK/gateway.log" 2>&1 &
PIDS+=($!)
MCP_BEARER_TOKEN="$TOKEN" "$BIN/shopping-service" --listen "127.0.0.1:${shop_port}" \
    --gateway-url "$gateway" >"$WORK/shopping.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 200); do
    curl -fsS -o /dev/null "$gateway/health" 2>/dev/null && break
    sleep 0.1
done
for _ in $(seq 1 200); do
    curl -fsS -H "Authorization: Bearer $TOKEN" "$gateway/services" 2>/dev/null | grep -q shopping-service && break
    sleep 0.1
done

# The Python SDK 1.x's stdio client, running `gateway stdio` as a desktop client would.
cat >"$WORK/bridge_client.py" <<'PY'
"""The official Python SDK 1.x stdio client through `gateway stdio`: the matrix's cells
over the stdio bridge. Usage: python bridge_client.py GATEWAY_BIN BASE_URL TOKEN CLIENTS_DIR"""
import asyncio, os, sys
gateway_bin, base_url, token, clients_dir = sys.argv[1:5]
sys.argv = ["matrix.py", "sdk1-stdio", "-", base_url, token]
# matrix.py's cells, without its entry point (it runs on import).
_source = open(os.path.join(clients_dir, "matrix.py")).read()
matrix = type(sys)("matrix")
exec(compile(_source[: _source.index("async def main")], "matrix.py", "exec"), matrix.__dict__)
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client

async def main():
    async def sampling(context, params):
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text=matrix.SAMPLED), model="matrix", stopReason="endTurn")
    async def elicitation(context, params):
        return types.ElicitResult(action="accept", content={"username": "matrix", "email": "matrix@example.com"})
    server = StdioServerParameters(command=gateway_bin, args=["stdio", "--url", base_url],
        env={"MCP_BEARER_TOKEN": token, "RUST_LOG": "warn", "PATH": os.environ.get("PATH", "")})
    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write, sampling_callback=sampling, elicitation_callback=elicitation) as session:
            await session.initialize()
            async def list_tools(): return (await session.list_tools()).tools
            async def read_resource(uri): return (await session.read_resource(uri)).contents
            async def get_prompt(name): return (await session.get_prompt(name)).messages
            await matrix.cells(list_tools, session.call_tool, read_resource, get_prompt)

asyncio.run(main())
PY

url="$gateway/mcp"
ERAS=(2025 2026)
for era in "${ERAS[@]}"; do
    # The fixture of this era replaces the previous one under the same name.
    fx_port="$(free_port)"
    "$BIN/conformance-fixture" --listen "127.0.0.1:${fx_port}" --revision "$era" \
        >"$WORK/fixture-$era.log" 2>&1 &
    fx_pid=$!
    PIDS+=("$fx_pid")
    for _ in $(seq 1 200); do
        curl -fsS -o /dev/null "http://127.0.0.1:${fx_port}/health" 2>/dev/null && break
        sleep 0.1
    done
    code=$(curl -sS -o "$WORK/register.json" -w '%{http_code}' -X POST "$gateway/register" \
        -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        -d "{\"name\":\"conformance\",\"url\":\"http://127.0.0.1:${fx_port}/mcp\",\"replace\":true}")
    [[ "$code" == 201 || "$code" == 200 ]] ||
        die "registering the $era fixture answered $code: $(cat "$WORK/register.json")"
    grep -q "\"protocolVersion\":\"$([[ $era == 2025 ]] && echo 2025-11-25 || echo 2026-07-28)\"" "$WORK/register.json" ||
        die "the $era fixture was not spoken to in its revision: $(cat "$WORK/register.json")"
    results="$WORK/results-$era.jsonl"
    : >"$results"
    run() { timeout 180 "$@" >>"$results" 2>>"$WORK/clients-$era.log" || true; }
    log "upstream era $era: Python SDK 2.x ($PY_SDK2)"
    for mode in auto legacy 2026-07-28; do run "$SDK2_PY" "$ROOT/scripts/clients/matrix.py" sdk2 "$mode" "$url" "$TOKEN"; done
    log "upstream era $era: fastmcp ($PY_FASTMCP)"
    for mode in auto legacy; do run "$SDK2_PY" "$ROOT/scripts/clients/matrix.py" fastmcp "$mode" "$url" "$TOKEN"; done
    log "upstream era $era: Python SDK 1.x ($PY_SDK1)"
    run "$SDK1_PY" "$ROOT/scripts/clients/matrix.py" sdk1 - "$url" "$TOKEN"
    log "upstream era $era: TypeScript SDK ($TS_SDK)"
    (cd "$TS_DIR" && cp "$ROOT/scripts/clients/matrix.mjs" . && run "$NODE" matrix.mjs "$url" "$TOKEN")
    log "upstream era $era: Python SDK 1.x stdio client through gateway stdio"
    run "$SDK1_PY" "$WORK/bridge_client.py" "$BIN/gateway" "$gateway" "$TOKEN" "$ROOT/scripts/clients"
done

# The matrix, and the verdict.
status=0
printf '\n%-6s %-20s %-28s %s\n' era client cell result
for era in "${ERAS[@]}"; do
    results="$WORK/results-$era.jsonl"
    while IFS= read -r line; do
        client=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["client"])' "$line")
        cell=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["cell"])' "$line")
        ok=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ok"])' "$line")
        detail=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["detail"])' "$line")
        expected="${EXPECTED_FAILURES["$era|$client|$cell"]:-}"
        if [[ "$ok" == True && -z "$expected" ]]; then
            verdict="pass"
        elif [[ "$ok" != True && -n "$expected" ]]; then
            verdict="expected failure: $expected"
        elif [[ "$ok" == True ]]; then
            verdict="PASSES BUT LISTED AS EXPECTED TO FAIL (update EXPECTED_FAILURES)"
            status=1
        else
            verdict="FAIL: $detail"
            status=1
        fi
        printf '%-6s %-20s %-28s %s\n' "$era" "$client" "$cell" "$verdict"
    done <"$results"
    cells=$(wc -l <"$results")
    if ((cells < 48)); then
        echo "upstream era $era: only $cells cells reported (48 expected); the clients' errors:"
        tail -40 "$WORK/clients-$era.log"
        status=1
    fi
done
exit "$status"
