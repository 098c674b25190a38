"""One whole client session of the official Python SDK 2.x through the load balancer in
front of three gateway replicas (scripts/cluster.sh).

Usage: python cluster.py MODE URL TOKEN
  MODE  legacy (2025-11-25: initialize, then every request carries the Mcp-Session-Id)
        or auto (the SDK's default: probes server/discover, speaks 2026-07-28)

The gateway fronts shopping-service and user-service. One `Client` does everything: it
lists the tools, calls getProductById 9 times, getUserById once and
getPersonalizedRecommendations 3 times (shopping-service asks user-service for the
user's preferences through the load balancer, in its own session), lists and gets
prompts, lists and reads resources. Every HTTP request the SDK sends is recorded, so the
last cell checks the session itself: one initialize and one Mcp-Session-Id throughout
(legacy), or no session at all and 2026-07-28 on every request (auto); never a 404.

Prints one JSON object per cell: {"client", "cell", "ok", "detail"}; the calls' counts
are what cluster.sh then finds in the replicas' call logs.
"""

import asyncio
import json
import sys
import traceback

MODE, URL, TOKEN = sys.argv[1:4]
CLIENT = f"sdk2:{MODE}"
EXPECTED_VERSION = {"legacy": "2025-11-25", "auto": "2026-07-28"}[MODE]
PRODUCT_IDS = [str(n) for n in (1, 17, 42, 99, 123, 200, 314, 401, 480)]
USER_ID = "456"
RECOMMENDED_FOR = ["456", "7", "321"]
TOOLS = {"getProductById", "getUserById", "getPersonalizedRecommendations"}
PROMPTS = {"recommend_for_user", "summarise_order_history", "summarise_user", "find_users"}
RESOURCE = "ecommerce://products/categories"

# Every HTTP request the SDK sent: [method, JSON-RPC method, Mcp-Session-Id,
# MCP-Protocol-Version, status (None until answered)].
EXCHANGES = []


def report(cell, ok, detail=""):
    print(json.dumps({"client": CLIENT, "cell": cell, "ok": bool(ok), "detail": str(detail)[:300]}), flush=True)


def structured_of(result):
    for name in ("structured_content", "structuredContent"):
        value = getattr(result, name, None)
        if value:
            return value
    return None


async def cell(name, check):
    """Runs one cell: `check` returns (ok, detail); an exception fails the cell."""
    try:
        ok, detail = await asyncio.wait_for(check(), 60)
        report(name, ok, detail)
    except Exception as e:
        report(name, False, "".join(traceback.format_exception_only(type(e), e)).strip())


async def on_request(request):
    method = None
    try:
        body = json.loads(request.content or b"null")
        if isinstance(body, dict):
            method = body.get("method") or "(response)"
    except Exception:
        pass
    record = [
        request.method,
        method,
        request.headers.get("mcp-session-id"),
        request.headers.get("mcp-protocol-version"),
        None,
    ]
    request.extensions["cluster_record"] = record
    EXCHANGES.append(record)


async def on_response(response):
    record = response.request.extensions.get("cluster_record")
    if record is not None:
        record[4] = response.status_code


def session_check():
    """The session as the load balancer's replicas saw it, from the SDK's own requests."""
    posts = [e for e in EXCHANGES if e[0] == "POST"]
    not_found = [e for e in EXCHANGES if e[4] == 404]
    failed = [e for e in EXCHANGES if e[4] is not None and e[4] >= 400]
    initializes = [e for e in posts if e[1] == "initialize"]
    counts = {m: sum(e[0] == m for e in EXCHANGES) for m in ("POST", "GET", "DELETE")}
    summary = ", ".join(f"{n} {m}" for m, n in counts.items() if n)
    unanswered = [e[:2] for e in EXCHANGES if e[4] is None]
    if unanswered:
        summary += f" ({len(unanswered)} unanswered: {unanswered[:3]})"
    if not_found or failed:
        return False, f"{summary}; failed: {(not_found or failed)[:5]}"
    if MODE == "legacy":
        after = [e for e in posts if e[1] != "initialize"]
        ids = {e[2] for e in after}
        ok = len(initializes) == 1 and len(ids) == 1 and None not in ids
        deletes = [e[4] for e in EXCHANGES if e[0] == "DELETE"]
        return ok, f"{summary} (answered {deletes}), {len(initializes)} initialize, session ids after it: {sorted(map(str, ids))}"
    ids = {e[2] for e in EXCHANGES}
    versions = {e[3] for e in posts if e[1] != "server/discover"}
    ok = not initializes and ids == {None} and versions == {EXPECTED_VERSION}
    return ok, f"{summary}, {len(initializes)} initialize, session ids {sorted(map(str, ids))}, versions {sorted(map(str, versions))}"


async def session():
    import httpx2
    from mcp import Client, types
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
        event_hooks={"request": [on_request], "response": [on_response]},
    )
    transport = streamable_http_client(URL, http_client=http)
    # The name cluster.sh looks for among the sessions in the store.
    info = types.Implementation(name=f"cluster-py-{MODE}", version="1")
    async with Client(transport, mode=MODE, client_info=info) as client:

        async def protocol():
            version = client.protocol_version
            return version == EXPECTED_VERSION, version

        async def list_tools():
            names = {t.name for t in (await client.list_tools(cache_mode="bypass")).tools}
            return TOOLS <= names, f"{len(names)} tools" + ("" if TOOLS <= names else f", missing {TOOLS - names}")

        async def products():
            wrong = []
            for id in PRODUCT_IDS:
                result = await client.call_tool("getProductById", {"id": id})
                structured = structured_of(result)
                if result.is_error or not isinstance(structured, dict) or structured.get("id") != id:
                    wrong.append((id, structured))
            return not wrong, f"{len(PRODUCT_IDS) - len(wrong)}/{len(PRODUCT_IDS)} ids match" + (f": {wrong[:2]}" if wrong else "")

        async def user():
            result = await client.call_tool("getUserById", {"id": USER_ID})
            structured = structured_of(result)
            ok = not result.is_error and isinstance(structured, dict) and structured.get("id") == USER_ID
            return ok, "" if ok else structured

        async def recommendations():
            wrong = []
            for user_id in RECOMMENDED_FOR:
                result = await client.call_tool("getPersonalizedRecommendations", {"userId": user_id, "limit": 3})
                s = structured_of(result)
                ok = (
                    not result.is_error
                    and isinstance(s, dict)
                    and s.get("userId") == user_id
                    and (s.get("basedOn") or {}).get("userId") == user_id
                    and len(s.get("products") or []) >= 1
                )
                if not ok:
                    wrong.append((user_id, s or [getattr(c, "text", c) for c in result.content]))
            n = len(RECOMMENDED_FOR)
            return not wrong, f"{n - len(wrong)}/{n} based on user-service's preferences" + (f": {wrong[:1]}" if wrong else "")

        async def prompts():
            names = {p.name for p in (await client.list_prompts(cache_mode="bypass")).prompts}
            return PROMPTS <= names, f"{len(names)} prompts" + ("" if PROMPTS <= names else f", missing {PROMPTS - names}")

        async def get_prompt():
            messages = (await client.get_prompt("summarise_user", {"userId": USER_ID})).messages
            return len(messages) >= 1, f"{len(messages)} messages"

        async def resources():
            listed = {str(r.uri) for r in (await client.list_resources(cache_mode="bypass")).resources}
            templates = {
                t.uri_template for t in (await client.list_resource_templates(cache_mode="bypass")).resource_templates
            }
            ok = RESOURCE in listed and "users://{userId}/profile" in templates
            return ok, f"{len(listed)} resources, {len(templates)} templates"

        async def read_resource():
            contents = (await client.read_resource(RESOURCE, cache_mode="bypass")).contents
            text = next((getattr(c, "text", None) for c in contents if getattr(c, "text", None)), "")
            return "Electronics" in text, f"{len(text)} characters"

        await cell("protocol version", protocol)
        await cell("list tools", list_tools)
        await cell("getProductById x9, structured id", products)
        await cell("getUserById, structured id", user)
        await cell("getPersonalizedRecommendations x3", recommendations)
        await cell("list prompts", prompts)
        await cell("get prompt", get_prompt)
        await cell("list resources, templates", resources)
        await cell("read resource", read_resource)
    ok, detail = session_check()
    report("one session, no 404, no re-initialize" if MODE == "legacy" else "sessionless 2026-07-28, no 404", ok, detail)


async def main():
    try:
        await asyncio.wait_for(session(), 150)
    except Exception as e:
        report("connect", False, "".join(traceback.format_exception_only(type(e), e)).strip())


asyncio.run(main())
