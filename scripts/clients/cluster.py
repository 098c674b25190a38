"""One whole client session of the official Python SDK 2.x through the load balancer in
front of three gateway replicas (scripts/cluster.sh).

Usage: python cluster.py MODE URL TOKEN
  MODE  legacy (2025-11-25: initialize, then every request carries the Mcp-Session-Id)
        or auto (the SDK's default: probes server/discover, speaks 2026-07-28)

The gateway fronts shopping-service and user-service, and the conformance fixture twice:
`conf2025` (conformance-fixture --revision 2025) and `conf2026` (--revision 2026), whose
tools are named `conf2025__test_*` and `conf2026__test_*` as they collide. One `Client`
does everything: it lists the tools, calls getProductById 9 times, getUserById once and
getPersonalizedRecommendations 3 times (shopping-service asks user-service for the
user's preferences through the load balancer, in its own session), lists and gets
prompts, lists and reads resources.

The client declares sampling, elicitation and roots callbacks and calls the fixture's
tools that ask it during the call, each 4 times: test_sampling, test_elicitation and
test_input_required_result_list_roots; each result must carry what the callback answered
that call, and each call must have asked once. In `legacy` mode they are conf2025's (a
2025-era backend asking within the call): the gateway's question reaches the client on
the call's stream with the id `<replica id>:<n>` of the replica running the call, and the
client's answer, posted through the load balancer, lands on another replica, which relays
it (cluster.sh counts the relays in the store); the questions must come from more than
one replica. In `auto` mode the gateway answers input_required and the SDK answers the
embedded questions and retries with inputResponses and the gateway's sealed
requestState, the retry reaching another replica than the first round (round robin):
conf2026's (a 2026-07-28 backend answering input_required itself: any replica serves
the retry, cluster.sh checks in the call logs that another did), then conf2025's (the
call to the 2025-era backend waits, parked, on the replica that asked, which the retry is
passed to).

In `auto` mode, test_tool_with_logging (three log messages at info) is called 3 times
with the level warning in each request's _meta (2026-07-28 has no logging/setLevel),
which must deliver no log message to the logging callback, then 3 times at info: 9
messages. Not yet in `legacy` mode (logging/setLevel through one replica, the calls
through the others): a client that declared sampling, elicitation or roots gets a
backend's log messages on its GET stream, which is on one replica, and the calls on the
other replicas lose theirs (see LOGGING).

Every HTTP request the SDK sends is recorded, so the last cell checks the session
itself: one initialize and one Mcp-Session-Id throughout (legacy), or no session at all
and 2026-07-28 on every request (auto); never a 404.

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
# The fixtures (registered by cluster.sh) whose tools that ask the client each mode
# calls, in order, and the fixture test_tool_with_logging is called on.
ASKING_FIXTURES = {"legacy": ["conf2025"], "auto": ["conf2026", "conf2025"]}[MODE]
LOGGING_TOOL = f"{ASKING_FIXTURES[0]}__test_tool_with_logging"
ASKING_TOOLS = ("test_sampling", "test_elicitation", "test_input_required_result_list_roots")
TOOLS |= {f"{f}__{t}" for f in ASKING_FIXTURES for t in ASKING_TOOLS} | {LOGGING_TOOL}
# How many times each asking tool is called (the answers land on other replicas).
ASKING_CALLS = 4
# test_tool_with_logging's calls at each level, and its log messages per call (at info).
LOGGING_CALLS = 3
LOGGING_MESSAGES = 3
LOG_LEVEL_META = "io.modelcontextprotocol/logLevel"
# Whether this mode runs the logging cells (see above: not yet in legacy mode).
LOGGING = MODE == "auto"

# What the server asked the client: kind -> the JSON-RPC id of each request (legacy:
# `<replica id>:<n>`) and the fragments of the tool's result the callback's answer makes,
# in order.
ASKED = {"sampling": [], "elicitation": [], "roots": []}
# The log messages the logging callback got: (level, data).
LOGS = []

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


def text_of(result):
    return " ".join(getattr(c, "text", "") or "" for c in result.content)


def asking_replicas(ids):
    """The replicas named by tagged request ids (`<replica id>:<n>`)."""
    return {i.rsplit(":", 1)[0] for i in ids if ":" in i}


async def session():
    import httpx2
    from mcp import Client, types
    from mcp.client.streamable_http import streamable_http_client

    async def sampling(context, params):
        content = params.messages[-1].content
        blocks = content if isinstance(content, list) else [content]
        prompt = " ".join(getattr(b, "text", "") or "" for b in blocks)
        answer = f"sampled for {prompt}"
        ASKED["sampling"].append((str(context.request_id), [f"LLM response: {answer}"]))
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text=answer), model="cluster-py"
        )

    async def elicitation(context, params):
        answer = f"user for {params.message}"
        ASKED["elicitation"].append((str(context.request_id), ["action=accept", f'"username":"{answer}"']))
        return types.ElicitResult(action="accept", content={"username": answer, "email": "cluster@example.com"})

    async def roots(context):
        n = len(ASKED["roots"]) + 1
        uri = f"file:///cluster/{MODE}/root-{n}"
        ASKED["roots"].append((str(context.request_id), [f"Client roots: {uri} (root {n})"]))
        return types.ListRootsResult(roots=[types.Root(uri=uri, name=f"root {n}")])

    async def logging(params):
        LOGS.append((params.level, params.data))

    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
        event_hooks={"request": [on_request], "response": [on_response]},
    )
    transport = streamable_http_client(URL, http_client=http)
    # The name cluster.sh looks for among the sessions in the store.
    info = types.Implementation(name=f"cluster-py-{MODE}", version="1")
    async with Client(
        transport,
        mode=MODE,
        client_info=info,
        sampling_callback=sampling,
        elicitation_callback=elicitation,
        list_roots_callback=roots,
        logging_callback=logging,
    ) as client:

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

        def asking(kind, tool, arguments_of):
            """Calls `tool` ASKING_CALLS times; each call must ask the client once (`kind`)
            and its result carry what the callback answered."""

            async def check():
                wrong = []
                for n in range(ASKING_CALLS):
                    before = len(ASKED[kind])
                    result = await client.call_tool(tool, arguments_of(n))
                    asked = ASKED[kind][before:]
                    text = text_of(result)
                    if result.is_error or len(asked) != 1 or not all(f in text for f in asked[0][1]):
                        wrong.append((n, len(asked), text[:120]))
                ids = [i for i, _ in ASKED[kind]]
                detail = f"{ASKING_CALLS - len(wrong)}/{ASKING_CALLS} results carry the client's answer"
                ok = not wrong
                if MODE == "legacy":
                    # The questions' ids name the replicas that ran the calls.
                    replicas = asking_replicas(ids)
                    ok = ok and len(replicas) >= 2 and all(":" in i for i in ids)
                    short = [f"{i.rsplit(':', 1)[0][:8]}..:{i.rsplit(':', 1)[1]}" if ":" in i else i for i in ids]
                    detail += f"; asked by {len(replicas)} replicas (ids {', '.join(short)})"
                return ok, detail + (f": {wrong[:2]}" if wrong else "")

            return check

        def logging_at(level, expected):
            """test_tool_with_logging LOGGING_CALLS times at `level`: `expected` log
            messages in all must reach the logging callback."""

            async def check():
                meta = None
                if MODE == "legacy":
                    await client.set_logging_level(level)
                else:
                    meta = {LOG_LEVEL_META: level}
                LOGS.clear()
                failed = []
                for n in range(LOGGING_CALLS):
                    result = await client.call_tool(LOGGING_TOOL, {}, meta=meta)
                    if result.is_error or "executed successfully" not in text_of(result):
                        failed.append((n, text_of(result)[:120]))
                # Notifications may trail the result a little: give them a second.
                for _ in range(10):
                    if len(LOGS) > expected:
                        break
                    await asyncio.sleep(0.1)
                levels = sorted({str(lv) for lv, _ in LOGS})
                ok = not failed and len(LOGS) == expected
                return ok, f"{len(LOGS)} log messages (levels {levels}) from {LOGGING_CALLS} calls" + (
                    f"; failed: {failed[:2]}" if failed else ""
                )

            return check

        await cell("protocol version", protocol)
        await cell("list tools", list_tools)
        await cell("getProductById x9, structured id", products)
        await cell("getUserById, structured id", user)
        await cell("getPersonalizedRecommendations x3", recommendations)
        await cell("list prompts", prompts)
        await cell("get prompt", get_prompt)
        await cell("list resources, templates", resources)
        await cell("read resource", read_resource)
        for fixture in ASKING_FIXTURES:
            await cell(
                f"{fixture} test_sampling x{ASKING_CALLS}, the client's answers",
                asking("sampling", f"{fixture}__test_sampling", lambda n, f=fixture: {"prompt": f"prompt {n} ({f})"}),
            )
            await cell(
                f"{fixture} test_elicitation x{ASKING_CALLS}, the client's answers",
                asking("elicitation", f"{fixture}__test_elicitation", lambda n, f=fixture: {"message": f"message {n} ({f})"}),
            )
            await cell(
                f"{fixture} list_roots tool x{ASKING_CALLS}, the client's roots",
                asking("roots", f"{fixture}__test_input_required_result_list_roots", lambda n: {}),
            )
        if LOGGING:
            how = "logging/setLevel" if MODE == "legacy" else "_meta logLevel"
            await cell(f"{how} warning: info logs not delivered", logging_at("warning", 0))
            await cell(
                f"{how} info: info logs delivered", logging_at("info", LOGGING_CALLS * LOGGING_MESSAGES)
            )
    ok, detail = session_check()
    report("one session, no 404, no re-initialize" if MODE == "legacy" else "sessionless 2026-07-28, no 404", ok, detail)


async def main():
    try:
        await asyncio.wait_for(session(), 150)
    except Exception as e:
        report("connect", False, "".join(traceback.format_exception_only(type(e), e)).strip())


asyncio.run(main())
