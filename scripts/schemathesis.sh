#!/usr/bin/env bash
# The admin API against its own OpenAPI document (GET /openapi.json) with schemathesis:
# a live gateway (the workspace's debug build) with one upstream registered, every
# documented operation exercised with generated and mutated inputs, with the token, for a
# bounded number of examples. Fails on any 5xx (but /register's documented 502 for a URL
# that does not answer MCP) and on any response that does not match the document (status,
# content type, headers, body schema), on schema-invalid input that is not refused with a
# 4xx, and on an operation that answers without its token.
#
# schemathesis is installed from PyPI (pinned) into a venv under ~/.cache when missing.
# Usage: scripts/schemathesis.sh [max examples per operation, default 40]
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=4.32.5
VENV="${HOME}/.cache/mcp-schemathesis/${VERSION}"
if [[ ! -x "$VENV/bin/st" ]]; then
    echo "== installing schemathesis $VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "schemathesis==${VERSION}"
fi

EXAMPLES="${1:-40}"
BIN="${CARGO_TARGET_DIR:-target}/debug"
cargo build --quiet --locked -p gateway -p shopping-service
work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
gw_port="$(free_port)"
shop_port="$(free_port)"
TOKEN="schemathesis-token-0123456789"

MCP_BEARER_TOKEN="$TOKEN" "$BIN/gateway" --listen "127.0.0.1:${gw_port}" \
    --store "$work/gw.db" >"$work/gateway.log" 2>&1 &
pids+=($!)
MCP_BEARER_TOKEN="$TOKEN" SHOPPING_SERVICE_LISTEN="127.0.0.1:${shop_port}" \
    GATEWAY_URL="http://127.0.0.1:${gw_port}" "$BIN/shopping-service" \
    >"$work/shopping.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 200); do
    if curl -fsS -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:${gw_port}/services" 2>/dev/null \
        | grep -q shopping-service; then
        break
    fi
    sleep 0.1
done

echo "== schemathesis $VERSION: ${EXAMPLES} examples per operation against http://127.0.0.1:${gw_port}/openapi.json"
status=0
SCHEMATHESIS_HOOKS=scripts.schemathesis.hooks PYTHONPATH=. "$VENV/bin/st" --no-color run \
    "http://127.0.0.1:${gw_port}/openapi.json" \
    --header "Authorization: Bearer ${TOKEN}" \
    --checks no_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,ignored_auth \
    --max-examples "$EXAMPLES" \
    --generation-deterministic \
    --request-timeout 20 \
    --suppress-health-check all \
    || status=$?
if [[ $status -ne 0 ]]; then
    echo "!! schemathesis failed; the gateway's log:"
    tail -40 "$work/gateway.log"
fi
exit "$status"
