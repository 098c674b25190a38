"""One MCP client library, through the gateway, cell by cell (scripts/clients.sh).

Usage: python matrix.py FLAVOR MODE URL TOKEN
  FLAVOR  sdk2 (the official Python SDK 2.x `Client`), sdk1 (the official Python SDK 1.x
          `ClientSession`), fastmcp (fastmcp's `Client`)
  MODE    for sdk2 and fastmcp: auto, legacy or a protocol version (2026-07-28); sdk1: -

Prints one JSON object per cell: {"client", "cell", "ok", "detail"}. The gateway fronts
the conformance fixture (tools test_simple_text, test_sampling, test_elicitation;
resource test://static-text; prompt test_simple_prompt) and shopping-service
(getProductById, with structured content).
"""

import asyncio
import json
import sys
import traceback

FLAVOR, MODE, URL, TOKEN = sys.argv[1:5]
CLIENT = f"{FLAVOR}:{MODE}" if MODE != "-" else FLAVOR
SAMPLED = "sampled by the client"


def report(cell, ok, detail=""):
    print(json.dumps({"client": CLIENT, "cell": cell, "ok": bool(ok), "detail": str(detail)[:300]}), flush=True)


def text_of(result):
    """The text of a call result's (or prompt's) first text content, whatever the model."""
    content = getattr(result, "content", None) or []
    for c in content:
        t = getattr(c, "text", None)
        if t:
            return t
    return json.dumps(getattr(result, "model_dump", lambda **_: str(result))(mode="json"))[:300]


def structured_of(result):
    for name in ("structured_content", "structuredContent", "data"):
        value = getattr(result, name, None)
        if value:
            return value
    return None


async def cells(list_tools, call_tool, read_resource, get_prompt):
    """The common cells, given the library's own operations."""
    try:
        tools = await list_tools()
        names = {t.name for t in tools}
        report("list tools", {"test_simple_text", "getProductById"} <= names, f"{len(names)} tools")
    except Exception as e:
        report("list tools", False, repr(e))
    try:
        result = await call_tool("getProductById", {"id": "123"})
        structured = structured_of(result)
        ok = isinstance(structured, dict) and structured.get("id") == "123"
        report("call, structured content", ok, structured if not ok else "")
    except Exception as e:
        report("call, structured content", False, repr(e))
    try:
        contents = await read_resource("test://static-text")
        text = next((getattr(c, "text", None) for c in contents if getattr(c, "text", None)), None)
        report("read resource", bool(text), text or contents)
    except Exception as e:
        report("read resource", False, repr(e))
    try:
        messages = await get_prompt("test_simple_prompt")
        report("get prompt", len(messages) >= 1, f"{len(messages)} messages")
    except Exception as e:
        report("get prompt", False, repr(e))
    try:
        result = await asyncio.wait_for(call_tool("test_sampling", {"prompt": "say hi"}), 30)
        text = text_of(result)
        report("sampling round trip", SAMPLED in text, text)
    except Exception as e:
        report("sampling round trip", False, repr(e))
    try:
        result = await asyncio.wait_for(call_tool("test_elicitation", {"message": "your name?"}), 30)
        text = text_of(result)
        report("elicitation round trip", "accept" in text.lower(), text)
    except Exception as e:
        report("elicitation round trip", False, repr(e))


async def sdk2():
    import httpx2
    from mcp import Client, types
    from mcp.client.streamable_http import streamable_http_client

    async def sampling(context, params):
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=SAMPLED),
            model="matrix",
            stop_reason="endTurn",
        )

    async def elicitation(context, params):
        return types.ElicitResult(action="accept", content={"username": "matrix", "email": "matrix@example.com"})

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    transport = streamable_http_client(URL, http_client=http)
    async with Client(
        transport, mode=MODE, sampling_callback=sampling, elicitation_callback=elicitation
    ) as client:

        async def list_tools():
            return (await client.list_tools()).tools

        async def read_resource(uri):
            return (await client.read_resource(uri)).contents

        async def get_prompt(name):
            return (await client.get_prompt(name)).messages

        await cells(list_tools, client.call_tool, read_resource, get_prompt)


async def sdk1():
    from mcp import ClientSession, types
    from mcp.client.streamable_http import streamablehttp_client

    async def sampling(context, params):
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=SAMPLED),
            model="matrix",
            stopReason="endTurn",
        )

    async def elicitation(context, params):
        return types.ElicitResult(action="accept", content={"username": "matrix", "email": "matrix@example.com"})

    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with streamablehttp_client(URL, headers=headers) as (read, write, _):
        async with ClientSession(
            read, write, sampling_callback=sampling, elicitation_callback=elicitation
        ) as session:
            await session.initialize()

            async def list_tools():
                return (await session.list_tools()).tools

            async def read_resource(uri):
                return (await session.read_resource(uri)).contents

            async def get_prompt(name):
                return (await session.get_prompt(name)).messages

            await cells(list_tools, session.call_tool, read_resource, get_prompt)


async def fastmcp_client():
    from fastmcp import Client

    async def sampling(messages, params, context):
        return SAMPLED

    async def elicitation(message, response_type, params, context):
        return {"username": "matrix", "email": "matrix@example.com"}

    client = Client(
        URL, auth=TOKEN, mode=MODE, sampling_handler=sampling, elicitation_handler=elicitation
    )
    async with client:

        async def call_tool(name, arguments):
            return await client.call_tool(name, arguments, raise_on_error=False)

        async def get_prompt(name):
            return (await client.get_prompt(name)).messages

        await cells(client.list_tools, call_tool, client.read_resource, get_prompt)


async def main():
    runner = {"sdk2": sdk2, "sdk1": sdk1, "fastmcp": fastmcp_client}[FLAVOR]
    try:
        await asyncio.wait_for(runner(), 120)
    except Exception as e:
        report("connect", False, "".join(traceback.format_exception_only(type(e), e)).strip())


asyncio.run(main())
