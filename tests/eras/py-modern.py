"""A second 2026-07-28 client for tests/eras: the Python SDK (`mcp`, pinned in requirements.txt)
with its version pinned to 2026-07-28 (no probe, stateless), through the same Warden. Lists the
tools of both upstreams, calls test_simple_text on each, MRTR (an elicitation answered by the
callback, then the retry) on the modern upstream, and a policy-denied tool.

Env: GW_URL, TOKEN. Prints one JSON object per check on stdout
({"name": ..., "ok": bool, "why": ...}); eras.mjs folds them into its own report.
"""

import asyncio
import json
import os

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import ElicitResult


def report(name, ok, why=""):
    print(json.dumps({"name": f"python client: {name}", "ok": bool(ok), "why": why}), flush=True)


def text_of(result):
    return "".join(getattr(c, "text", "") for c in (result.content or []) if getattr(c, "type", "") == "text")


async def main():
    elicited = 0

    async def on_elicit(_ctx, _params):
        nonlocal elicited
        elicited += 1
        return ElicitResult(action="accept", content={"name": "Alice"})

    headers = {"Authorization": f"Bearer {os.environ['TOKEN']}"}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        transport = streamable_http_client(os.environ["GW_URL"], http_client=http)  # entered by Client
        async with Client(transport, mode="2026-07-28", elicitation_callback=on_elicit) as client:
            report("negotiated 2026-07-28", client.protocol_version == "2026-07-28", client.protocol_version)
            tools = {t.name for t in (await client.list_tools()).tools}
            for t in ("legacy_test_simple_text", "modern_test_simple_text"):
                report(f"tools/list shows {t}", t in tools, ", ".join(sorted(tools)[:6]))
            for up in ("legacy", "modern"):
                try:
                    r = await client.call_tool(f"{up}_test_simple_text", {})
                    report(f"-> {up}: test_simple_text", text_of(r) == "This is a simple text response for testing.", text_of(r)[:200])
                except Exception as e:  # noqa: BLE001 - reported, not raised
                    report(f"-> {up}: test_simple_text", False, f"{type(e).__name__}: {e}"[:300])
            try:
                r = await client.call_tool("modern_test_input_required_result_elicitation", {})
                report("-> modern: MRTR relayed", elicited == 1 and text_of(r) == "Hello, Alice!", f"elicited {elicited}: {text_of(r)[:200]}")
            except Exception as e:  # noqa: BLE001
                report("-> modern: MRTR relayed", False, f"{type(e).__name__}: {e}"[:300])
            try:
                r = await client.call_tool("modern_test_error_handling", {})
                report("modern_test_error_handling denied by policy", r.is_error and "eras test policy" in text_of(r), text_of(r)[:200])
            except Exception as e:  # noqa: BLE001
                report("modern_test_error_handling denied by policy", "eras test policy" in str(e), f"{type(e).__name__}: {e}"[:300])


asyncio.run(main())
