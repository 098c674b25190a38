#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Third-party stdio MCP servers run by the gateway: the reference servers from npm,
# @modelcontextprotocol/server-everything (stdio mode) and
# @modelcontextprotocol/server-filesystem (on a temporary directory), configured as
# [[upstreams]] with a command. Through the gateway's /mcp each is listed and called, a
# resource of server-everything is read (server-filesystem offers tools only), a file is
# read through server-filesystem, the child's environment is checked (its own env set,
# the gateway's token absent), and server-everything's child is killed with SIGKILL and
# must come back by itself. Then the official Python SDK's stdio client, through `gateway
# stdio`, lists and calls a tool of a stdio upstream; and a server.json naming the npm
# package is imported for real (`POST /registry/import`: `npx -y NAME@VERSION` run as a
# stdio server, fetched from the npm registry) and called.
#
#   scripts/stdio-servers.sh        (exit 0: every check passed)
#
# Installs what it needs when missing, cached under $HOME: Node.js 22 and the pinned
# packages (npm registry). Everything else stays on loopback.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck disable=SC2034 # read by lib/node.sh
NODE_MAJOR="22"
CACHE="${MCP_CLIENTS_CACHE:-$HOME/.cache/mcp-clients}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET_DIR/debug"
TOKEN="stdio-servers-token-0123456789"
PY_SDK1="mcp==1.30.0"
PACKAGES=(
    "@modelcontextprotocol/server-everything@2026.8.31"
    "@modelcontextprotocol/server-filesystem@2026.8.31"
)

log() { printf '== %s\n' "$*"; }
die() {
    printf 'stdio-servers.sh: %s\n' "$*" >&2
    exit 2
}
# shellcheck source=lib/node.sh disable=SC1091 # followed with shellcheck -x
source "$ROOT/scripts/lib/node.sh"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/stdio-servers.XXXXXX")"
GATEWAY_PID=""
cleanup() {
    local status=$?
    [ -z "$GATEWAY_PID" ] || kill "$GATEWAY_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    if [ "$status" -ne 0 ] && [ -f "$WORK/gateway.log" ]; then
        echo "-- gateway log (last 40 lines) --" >&2
        tail -n 40 "$WORK/gateway.log" >&2 || true
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT

ensure_curl
ensure_node
SERVERS="$CACHE/stdio-servers"
npm_packages "$SERVERS" "${PACKAGES[@]}"
EVERYTHING="$SERVERS/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
FILESYSTEM="$SERVERS/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js"
if [ ! -f "$EVERYTHING" ] || [ ! -f "$FILESYSTEM" ]; then
    die "the npm packages are not where expected under $SERVERS"
fi

VENV="$CACHE/venv-stdio-servers"
if [[ ! -f "$VENV/.ready" ]] || [[ "$(cat "$VENV/.ready")" != "$PY_SDK1" ]]; then
    log "installing $PY_SDK1 into $VENV (the official Python SDK's stdio client)"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    timeout 600 "$VENV/bin/pip" install -q "$PY_SDK1"
    printf '%s' "$PY_SDK1" >"$VENV/.ready"
fi
command -v npx >/dev/null 2>&1 || ensure_npm

log "building the gateway"
(cd "$ROOT" && cargo build -q -p gateway --bins) || die "cargo build failed"

mkdir -p "$WORK/share"
printf 'hello from a file the filesystem server reads\n' >"$WORK/share/hello.txt"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$WORK/gateway.toml" <<EOF
listen = "127.0.0.1:$PORT"
store = "$WORK/gateway.db"
health_interval_ms = 500
connect_timeout_ms = 60000
allowed_commands = ["npx"]

[[upstreams]]
name = "everything"
command = "$NODE"
args = ["$EVERYTHING", "stdio"]
env = { EVERYTHING_SECRET = "only-for-everything" }

[[upstreams]]
name = "files"
command = "$NODE"
args = ["$FILESYSTEM", "$WORK/share"]
EOF
log "starting the gateway with both servers as stdio upstreams"
MCP_BEARER_TOKEN="$TOKEN" RUST_LOG="${RUST_LOG:-warn}" "$BIN/gateway" --config "$WORK/gateway.toml" \
    >"$WORK/gateway.log" 2>&1 &
GATEWAY_PID=$!

python3 - "$PORT" "$TOKEN" "$WORK/share" "$VENV/bin/python" "$BIN/gateway" <<'PY'
import json, os, signal, subprocess, sys, time, urllib.request

port, token, share, sdk_python, gateway_bin = sys.argv[1:6]
base = f"http://127.0.0.1:{port}"
failures = []

def request(path, body=None, method=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method or ("POST" if data else "GET"))
    req.add_header("Authorization", f"Bearer {token}")
    if data:
        req.add_header("Content-Type", "application/json")
        req.add_header("Accept", "application/json, text/event-stream")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())

def rpc(method, params):
    return request("/mcp", {"jsonrpc": "2.0", "id": 1, "method": method, "params": params})

def check(name, ok, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'}  {name}" + (f"  ({detail})" if detail and not ok else ""))
    if not ok:
        failures.append(name)

def service(name):
    for s in request("/services")["services"]:
        if s["name"] == name:
            return s
    return None

def wait(what, predicate, limit=90):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            if predicate():
                return True
        except Exception:
            pass
        time.sleep(0.25)
    check(what, False, f"not within {limit} s")
    return False

if not wait("both servers healthy", lambda: all(
        (service(n) or {}).get("state") == "healthy" for n in ("everything", "files"))):
    sys.exit(1)

# Probed with server/discover; a server that does not speak 2026-07-28 gets initialize,
# on a fresh child if it ignored the probe, which is not a restart.
for n in ("everything", "files"):
    instance = service(n)["instances"][0]
    print(f"      {n}: the gateway speaks {instance.get('protocolVersion')} to it")
    check(f"{n}: one start, no restart", instance["process"]["restarts"] == 0, json.dumps(instance)[:300])

tools = [t["name"] for t in rpc("tools/list", {})["result"]["tools"]]
check("tools/list has server-everything's echo and server-filesystem's read_text_file",
      "echo" in tools and "read_text_file" in tools, tools)

answer = rpc("tools/call", {"name": "echo", "arguments": {"message": "through the gateway over stdio"}})
text = json.dumps(answer.get("result", answer))
check("server-everything: tools/call echo", "through the gateway over stdio" in text, text[:300])

answer = rpc("resources/read", {"uri": "demo://resource/static/document/architecture.md"})
contents = answer.get("result", {}).get("contents", [])
check("server-everything: resources/read demo://resource/static/document/architecture.md",
      bool(contents) and bool(contents[0].get("text")), json.dumps(answer)[:300])

answer = rpc("tools/call", {"name": "read_text_file", "arguments": {"path": os.path.join(share, "hello.txt")}})
text = json.dumps(answer.get("result", answer))
check("server-filesystem: tools/call read_text_file", "hello from a file" in text, text[:300])

answer = rpc("tools/call", {"name": "list_allowed_directories", "arguments": {}})
text = json.dumps(answer.get("result", answer))
check("server-filesystem: its allowed directory is the configured one", os.path.realpath(share) in text or share in text, text[:300])

answer = rpc("tools/call", {"name": "get-env", "arguments": {}})
text = json.dumps(answer.get("result", answer))
check("the child's environment has its own env", "only-for-everything" in text, text[:300])
check("the child's environment lacks the gateway's token", token not in text and "MCP_BEARER_TOKEN" not in text)

entry = service("everything")
shown = json.dumps(entry)
check("/services never shows an env value", "only-for-everything" not in shown)
pid = entry["instances"][0]["process"].get("pid")
check("/services shows the child's pid", isinstance(pid, int), shown[:300])
if isinstance(pid, int):
    os.kill(pid, signal.SIGKILL)
    def back():
        s = service("everything")
        p = s["instances"][0]["process"]
        return s["state"] == "healthy" and p.get("pid") not in (None, pid)
    if wait("server-everything back after kill -9", back):
        answer = rpc("tools/call", {"name": "echo", "arguments": {"message": "again"}})
        check("server-everything answers after its restart", "again" in json.dumps(answer.get("result", answer)))
        process = service("everything")["instances"][0]["process"]
        check("its restart is counted with how it ended",
              process["restarts"] == 1 and process.get("lastExit") == "killed by signal 9", process)

# The official Python SDK's stdio client through `gateway stdio`: a desktop client's view.
client = r"""
import asyncio, os, sys
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

async def main():
    params = StdioServerParameters(command=sys.argv[1], args=["stdio", "--url", sys.argv[2]],
                                   env={"MCP_BEARER_TOKEN": sys.argv[3], "RUST_LOG": "warn",
                                        "PATH": os.environ.get("PATH", "")})
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = [t.name for t in (await session.list_tools()).tools]
            assert "echo" in tools and "read_text_file" in tools, tools
            result = await session.call_tool("echo", {"message": "sdk through the bridge"})
            text = result.content[0].text
            assert "sdk through the bridge" in text, text
            print("ok")

asyncio.run(asyncio.wait_for(main(), 60))
"""
try:
    out = subprocess.run([sdk_python, "-c", client, gateway_bin, base, token],
                         capture_output=True, text=True, timeout=90)
    check("the Python SDK's stdio client, through gateway stdio, lists and calls a stdio upstream's tool",
          out.returncode == 0 and out.stdout.strip().endswith("ok"), (out.stdout + out.stderr)[-600:])
except subprocess.TimeoutExpired:
    check("the Python SDK's stdio client through gateway stdio", False, "timed out")

# A server.json naming the npm package, imported for real: npx fetches and runs it.
server_json = {
    "$schema": "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json",
    "name": "io.github.modelcontextprotocol/everything",
    "description": "MCP's reference server (server-everything), from npm",
    "version": "2026.8.31",
    "packages": [{
        "registryType": "npm",
        "identifier": "@modelcontextprotocol/server-everything",
        "version": "2026.8.31",
        "transport": {"type": "stdio"},
        "packageArguments": [{"type": "positional", "value": "stdio"}],
    }],
}
try:
    imported = request("/registry/import", {"source": server_json, "name": "imported"})
    check("POST /registry/import registers the npm package", True)
except urllib.error.HTTPError as e:
    check("POST /registry/import registers the npm package", False, f"{e.code} {e.read()[:300]!r}")
    imported = None
if imported is not None:
    entry = service("imported") or {}
    command = (entry.get("instances") or [{}])[0].get("process", {}).get("command", "")
    check("the import runs npx -y NAME@VERSION stdio",
          command.startswith("npx -y @modelcontextprotocol/server-everything@2026.8.31") and command.endswith("stdio"),
          command)
    if wait("the imported server healthy", lambda: (service("imported") or {}).get("state") == "healthy", 120):
        answer = rpc("tools/call", {"name": "imported__echo", "arguments": {"message": "imported from a registry"}})
        check("the imported server answers (its tools qualified beside the configured copy)",
              "imported from a registry" in json.dumps(answer.get("result", answer)), json.dumps(answer)[:300])

print()
print("stdio servers: " + ("every check passed" if not failures else f"{len(failures)} failed: {failures}"))
sys.exit(1 if failures else 0)
PY
