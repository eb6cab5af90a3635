"""A realistic Python MCP upstream for `MODE=fastmcp loadtest/run.sh` and `loadtest/memory.sh`.

FastMCP from the `mcp` package (PyPI, 1.x), Streamable HTTP with `json_response=True` (one JSON
answer per POST, no SSE), stateful by default (an `initialize` opens a session, as the echo
upstream does); `--stateless` switches to `stateless_http=True`. Logging at WARNING, so
uvicorn writes no access-log line per request (nginx runs with `access_log off` too).

The tools have the echo upstream's names (`echo`, `whoami`, `slow`) so Warden's configuration
and policy rules are the same in both modes. It checks no token: Warden sends a delegation
token, direct and nginx the user's; both are accepted alike.

    python fastmcp_upstream.py --port 18081 [--stateless]
"""

import argparse
import asyncio

from mcp.server.fastmcp import Context, FastMCP


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--stateless", action="store_true")
    args = ap.parse_args()

    mcp = FastMCP(
        "loadtest-upstream",
        host="127.0.0.1",
        port=args.port,
        json_response=True,
        stateless_http=args.stateless,
        log_level="WARNING",
    )

    @mcp.tool()
    def echo(text: str, n: int = 0) -> dict:
        """Returns its arguments (as structuredContent and as text)."""
        return {"text": text, "n": n}

    @mcp.tool()
    def whoami(ctx: Context) -> str:
        """Returns the Authorization header the upstream received (or "none")."""
        req = ctx.request_context.request
        return req.headers.get("authorization", "none") if req is not None else "none"

    @mcp.tool()
    async def slow(ms: int = 5000) -> str:
        """Sleeps `ms` milliseconds, then answers."""
        await asyncio.sleep(ms / 1000)
        return "done"

    mcp.run(transport="streamable-http")


if __name__ == "__main__":
    main()
