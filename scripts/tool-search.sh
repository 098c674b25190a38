#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Tool search retrieval benchmark. The gateway runs with tool_search = "on" and five
# stdio servers as [[upstreams]]: this repository's shopping-service and user-service
# (--stdio), and from npm @modelcontextprotocol/server-everything (stdio mode),
# @modelcontextprotocol/server-filesystem (on a temporary directory) and
# @modelcontextprotocol/server-memory (on a temporary file). Once all five are healthy,
# every entry of bench/tool-search/queries.json (a task as a user would phrase it, and the
# service and tool expected for it) must name a tool the gateway lists in GET /services;
# then each query goes through the search_tools meta-tool (limit 10) and is ranked by
# where the expected service + tool comes: recall@1, recall@5 and MRR over the top 10,
# per server and overall, with every miss past rank 5 shown with its top 3.
#
#   scripts/tool-search.sh
#
# Writes a JSON summary to $TOOL_SEARCH_OUT (default target/tool-search.json). Exit 0:
# overall recall@5 reaches the target (0.90); 1: it does not; 2: set-up failed (build,
# install, a server not healthy, a query naming an unknown tool, search_tools missing or
# failing).
#
# Installs what it needs when missing, cached under $HOME: Node.js 22 and the pinned
# packages (npm registry). Everything else stays on loopback. The set-up time printed
# counts from the start (installs and the cargo build included) to all five healthy.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck disable=SC2034 # read by lib/node.sh
NODE_MAJOR="22"
CACHE="${MCP_CLIENTS_CACHE:-$HOME/.cache/mcp-clients}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET_DIR/debug"
TOKEN="tool-search-token-0123456789"
QUERIES="$ROOT/bench/tool-search/queries.json"
# Written by someone who saw neither the ranking nor queries.json, after the ranking's
# synonyms were chosen: reported beside the main set, to show how far the figures carry.
HOLDOUT="$ROOT/bench/tool-search/holdout.json"
OUT="${TOOL_SEARCH_OUT:-$ROOT/target/tool-search.json}"
TARGET_RECALL5="0.90"
# Not scripts/stdio-servers.sh's cache: its marker names its own two packages, and a third
# one there would have it reinstall everything.
PACKAGES=(
    "@modelcontextprotocol/server-everything@2026.8.31"
    "@modelcontextprotocol/server-filesystem@2026.8.31"
    "@modelcontextprotocol/server-memory@2026.8.31"
)

log() { printf '== %s\n' "$*"; }
die() {
    printf 'tool-search.sh: %s\n' "$*" >&2
    exit 2
}
# shellcheck source=lib/node.sh disable=SC1091 # followed with shellcheck -x
source "$ROOT/scripts/lib/node.sh"
NODE="${NODE:?lib/node.sh defines NODE}"

STARTED="$(date +%s.%N)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/tool-search.XXXXXX")"
GATEWAY_PID=""
cleanup() {
    local status=$?
    [ -z "$GATEWAY_PID" ] || kill "$GATEWAY_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    if [ "$status" -ge 2 ] && [ -s "$WORK/gateway.log" ]; then
        echo "-- gateway log (last 40 lines) --" >&2
        tail -n 40 "$WORK/gateway.log" >&2 || true
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT

command -v python3 >/dev/null 2>&1 || die "python3 is needed"
[ -f "$QUERIES" ] || die "no $QUERIES"
[ -f "$HOLDOUT" ] || die "no $HOLDOUT"
ensure_node
SERVERS="$CACHE/tool-search-servers"
npm_packages "$SERVERS" "${PACKAGES[@]}"
MODULES="$SERVERS/node_modules/@modelcontextprotocol"
EVERYTHING="$MODULES/server-everything/dist/index.js"
FILESYSTEM="$MODULES/server-filesystem/dist/index.js"
MEMORY="$MODULES/server-memory/dist/index.js"
for module in "$EVERYTHING" "$FILESYSTEM" "$MEMORY"; do
    [ -f "$module" ] || die "the npm packages are not where expected under $SERVERS (no $module)"
done

log "building the gateway and the demo services"
(cd "$ROOT" && cargo build -q -p gateway -p shopping-service -p user-service --bins) ||
    die "cargo build failed"
for bin in gateway shopping-service user-service; do
    [ -x "$BIN/$bin" ] || die "no $BIN/$bin after the build"
done

mkdir -p "$WORK/share"
printf 'a file for the filesystem server\n' >"$WORK/share/readme.txt"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$WORK/gateway.toml" <<EOF
listen = "127.0.0.1:$PORT"
store = "$WORK/gateway.db"
health_interval_ms = 500
connect_timeout_ms = 60000
tool_search = "on"

[[upstreams]]
name = "shopping-service"
command = "$BIN/shopping-service"
args = ["--stdio"]

[[upstreams]]
name = "user-service"
command = "$BIN/user-service"
args = ["--stdio"]

[[upstreams]]
name = "everything"
command = "$NODE"
args = ["$EVERYTHING", "stdio"]

[[upstreams]]
name = "files"
command = "$NODE"
args = ["$FILESYSTEM", "$WORK/share"]

[[upstreams]]
name = "memory"
command = "$NODE"
args = ["$MEMORY"]
env = { MEMORY_FILE_PATH = "$WORK/memory.jsonl" }
EOF
log "starting the gateway (tool_search = \"on\") with five stdio upstreams"
MCP_BEARER_TOKEN="$TOKEN" RUST_LOG="${RUST_LOG:-warn}" "$BIN/gateway" --config "$WORK/gateway.toml" \
    >"$WORK/gateway.log" 2>&1 &
GATEWAY_PID=$!

mkdir -p "$(dirname "$OUT")"
COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
python3 - "$PORT" "$TOKEN" "$GATEWAY_PID" "$QUERIES" "$HOLDOUT" "$OUT" "$TARGET_RECALL5" "$STARTED" \
    "$COMMIT" "${PACKAGES[@]}" <<'PY'
import json, os, statistics, sys, time, traceback, urllib.error, urllib.request

def unexpected(kind, value, tb):
    # Exit 1 means "below target": anything unforeseen is a set-up failure instead.
    sys.stdout.flush()
    traceback.print_exception(kind, value, tb)
    sys.stderr.flush()
    os._exit(2)
sys.excepthook = unexpected

port, token, gateway_pid, queries_path, holdout_path, out_path, target, started, commit = sys.argv[1:10]
packages = sys.argv[10:]
target, started, gateway_pid = float(target), float(started), int(gateway_pid)
base = f"http://127.0.0.1:{port}"
SERVERS = ["shopping-service", "user-service", "everything", "files", "memory"]
LIMIT = 10

def setup_failure(message):
    print(f"tool-search.sh: {message}", file=sys.stderr)
    sys.exit(2)

def request(path, body=None, timeout=30):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method="POST" if data else "GET")
    req.add_header("Authorization", f"Bearer {token}")
    if data:
        req.add_header("Content-Type", "application/json")
        req.add_header("Accept", "application/json, text/event-stream")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read().decode()
        if r.headers.get("Content-Type", "").startswith("text/event-stream"):
            # The answer is the last JSON-RPC response among the stream's messages.
            answer = None
            for line in raw.splitlines():
                if line.startswith("data:"):
                    message = json.loads(line[5:])
                    if "result" in message or "error" in message:
                        answer = message
            if answer is None:
                raise ValueError(f"no JSON-RPC answer in the event stream: {raw[:300]}")
            return answer
        return json.loads(raw)

def rpc(method, params):
    return request("/mcp", {"jsonrpc": "2.0", "id": 1, "method": method, "params": params})

def gateway_alive():
    try:
        with open(f"/proc/{gateway_pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

# The queries, checked before anything is asked of the gateway.
def load(path):
    try:
        with open(path) as f:
            queries = json.load(f)
    except (OSError, ValueError) as e:
        setup_failure(f"{path}: {e}")
    if not isinstance(queries, list) or not queries:
        setup_failure(f"{path}: not a non-empty JSON array")
    bad = [i for i, q in enumerate(queries)
           if not isinstance(q, dict) or set(q) != {"query", "service", "tool"}
           or not all(isinstance(q[k], str) and q[k].strip() for k in q)]
    if bad:
        setup_failure(f"{path}: entries {bad} are not {{\"query\", \"service\", \"tool\"}} with non-empty strings")
    seen, repeated = set(), []
    for q in queries:
        if q["query"] in seen:
            repeated.append(q["query"])
        seen.add(q["query"])
    if repeated:
        setup_failure(f"{path}: queries given twice: {repeated}")
    return queries

queries = load(queries_path)
holdout = load(holdout_path)

# All five servers healthy (bounded).
def services():
    return {s["name"]: s for s in request("/services")["services"]}

deadline, listed, last_error = time.time() + 120, {}, ""
while True:
    if not gateway_alive():
        setup_failure("the gateway exited during start-up (its log follows)")
    try:
        listed = services()
        if all(listed.get(n, {}).get("state") == "healthy" for n in SERVERS):
            break
    except (OSError, ValueError, KeyError) as e:
        last_error = str(e)
    if time.time() > deadline:
        states = {n: listed.get(n, {}).get("state", "absent") for n in SERVERS}
        setup_failure(f"not all five servers healthy within 120 s: {states} {last_error}".rstrip())
    time.sleep(0.25)
setup_seconds = time.time() - started

# The catalog from GET /services (tools/list shows the meta-tools only): every query's
# expected service + tool must exist there, by the name the service itself gives it.
catalog = {}
for name in SERVERS:
    tools = listed[name].get("tools")
    if not isinstance(tools, list):
        setup_failure(f"GET /services lists no tools for {name}: {json.dumps(listed[name])[:300]}")
    catalog[name] = {t.get("originalName") or t["name"] for t in tools}
for path, entries in ((queries_path, queries), (holdout_path, holdout)):
    unknown = sorted({(q["service"], q["tool"]) for q in entries
                      if q["tool"] not in catalog.get(q["service"], set())})
    if unknown:
        setup_failure(f"{os.path.basename(path)} expects tools the gateway does not list in GET /services: "
                      + ", ".join(f"{s}/{t}" for s, t in unknown))
expected = {(q["service"], q["tool"]) for q in queries}
uncovered = {n: sorted(t for t in catalog[n] if (n, t) not in expected) for n in SERVERS}
print(f"set-up: {setup_seconds:.1f} s; catalog: "
      + ", ".join(f"{n} {len(catalog[n])}" for n in SERVERS)
      + f" = {sum(len(c) for c in catalog.values())} tools; {len(queries)} queries"
      + f" (and {len(holdout)} held out)")
for n in SERVERS:
    if uncovered[n]:
        print(f"  not covered by a query: {n}: {', '.join(uncovered[n])}")

try:
    meta = [t["name"] for t in rpc("tools/list", {})["result"]["tools"]]
except (OSError, ValueError, KeyError) as e:
    setup_failure(f"tools/list failed: {e}")
if "search_tools" not in meta:
    setup_failure(f"tools/list has no search_tools (is tool_search on?): {meta[:10]}")

# Every query through search_tools.
def search(query):
    answer = rpc("tools/call", {"name": "search_tools", "arguments": {"query": query, "limit": LIMIT}})
    result = answer.get("result")
    if result is None or result.get("isError"):
        raise ValueError(json.dumps(answer)[:400])
    structured = result.get("structuredContent")
    if structured is None:
        structured = json.loads(result["content"][0]["text"])
    return structured["results"]

latencies = []
def ranked(entries):
    rows = []
    for q in entries:
        began = time.perf_counter()
        try:
            results = search(q["query"])
        except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
            setup_failure(f"search_tools failed for {q['query']!r}: {e}")
        latencies.append((time.perf_counter() - began) * 1000)
        found = [(r.get("service"), r.get("tool")) for r in results[:LIMIT]]
        rank = found.index((q["service"], q["tool"])) + 1 if (q["service"], q["tool"]) in found else None
        top3 = [{"service": r.get("service"), "tool": r.get("tool"), "score": r.get("score")} for r in results[:3]]
        rows.append({**q, "rank": rank, "top3": top3})
    return rows

rows = ranked(queries)
held_rows = ranked(holdout)

def figures(subset):
    n = len(subset)
    ranks = [r["rank"] for r in subset]
    def share(total):
        return round(total / n, 4) if n else 0.0
    return {
        "queries": n,
        "recall@1": share(sum(1 for k in ranks if k == 1)),
        "recall@5": share(sum(1 for k in ranks if k is not None and k <= 5)),
        "mrr": share(sum(1 / k for k in ranks if k is not None)),
    }

def table(title, rows):
    per_server = {n: {"tools": len(catalog[n]), **figures([r for r in rows if r["service"] == n])} for n in SERVERS}
    overall = {"tools": sum(len(c) for c in catalog.values()), **figures(rows)}
    print()
    print(title)
    print(f"{'server':<18} {'tools':>5} {'queries':>7} {'recall@1':>9} {'recall@5':>9} {'MRR@10':>7}")
    for name, f in [*per_server.items(), ("overall", overall)]:
        if name == "overall":
            print("-" * 60)
        print(f"{name:<18} {f['tools']:>5} {f['queries']:>7} {f['recall@1']:>9.3f} {f['recall@5']:>9.3f} {f['mrr']:>7.3f}")
    return per_server, overall

per_server, overall = table("queries.json (the target's set)", rows)
held_per_server, held_overall = table("holdout.json (held out: written without sight of the ranking)", held_rows)

misses = [r for r in rows if r["rank"] is None or r["rank"] > 5]
print()
print(f"misses past rank 5: {len(misses)}")
for r in misses:
    where = f"rank {r['rank']}" if r["rank"] else f"not in the top {LIMIT}"
    print(f"  {r['query']!r}: expected {r['service']}/{r['tool']}, {where}; top 3:"
          + ("" if r["top3"] else " (no results)"))
    for i, t in enumerate(r["top3"], 1):
        score = t["score"] if not isinstance(t["score"], float) else round(t["score"], 3)
        print(f"    {i}. {t['service']}/{t['tool']} ({score})")

passed = overall["recall@5"] >= target
latency = {"p50": statistics.median(latencies), "max": max(latencies)}
print()
print(f"search_tools latency: p50 {latency['p50']:.1f} ms, max {latency['max']:.1f} ms")
print(f"held out: recall@5 {held_overall['recall@5']:.3f}, recall@1 {held_overall['recall@1']:.3f}, MRR {held_overall['mrr']:.3f} (reported, not gated)")
print(f"overall recall@5 {overall['recall@5']:.3f} (target {target:.2f}): {'pass' if passed else 'FAIL'}")

summary = {
    "commit": commit,
    "packages": packages,
    "limit": LIMIT,
    "target": {"recall@5": target},
    "pass": passed,
    "setupSeconds": round(setup_seconds, 1),
    "searchLatencyMs": {k: round(v, 1) for k, v in latency.items()},
    "overall": overall,
    "servers": per_server,
    "uncovered": uncovered,
    "misses": misses,
    "queries": rows,
    "holdout": {"overall": held_overall, "servers": held_per_server, "queries": held_rows},
}
with open(out_path, "w") as f:
    json.dump(summary, f, indent=2)
    f.write("\n")
print(f"summary: {out_path}")
sys.exit(0 if passed else 1)
PY
