-- wrk script for loadtest/run.sh: every request is the same authenticated MCP `tools/call`
-- (POST, JSON body, bearer token, session id) with its own JSON-RPC id: ids must be unique
-- within a session, and a stateful FastMCP server routes each answer by id, so 32 connections
-- sending `"id":1` on one session leave all but one request waiting forever. Every response is
-- checked: an HTTP status
-- outside 2xx, or a 2xx without a JSON-RPC `result` (a JSON-RPC `error`, or a tool result with
-- `"isError":true`), is counted. `done` prints one `WRKJSON {...}` line that loadtest/measure.py
-- reads, and one `WRKBAD ...` line with the first bad response of a thread, if any.
--
-- Environment: WRK_BODY (the JSON-RPC request, with `"id":1`), WRK_TOKEN, WRK_SESSION,
-- WRK_PROTOCOL.

local body = os.getenv("WRK_BODY")
local at = body:find('"id":1,', 1, true)
assert(at, 'WRK_BODY must contain "id":1,')
local head, tail = body:sub(1, at + 4), body:sub(at + 6)

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("WRK_TOKEN")
local session = os.getenv("WRK_SESSION") or ""
if session ~= "" then -- empty: a stateless upstream, which gives no session
    wrk.headers["Mcp-Session-Id"] = session
end
wrk.headers["Mcp-Protocol-Version"] = os.getenv("WRK_PROTOCOL") or "2025-06-18"

local threads = {}

function setup(thread)
    table.insert(threads, thread)
    thread:set("tid", #threads)
end

function init(args)
    non2xx = 0
    rpc_errors = 0
    bad = ""
    next_id = tid * 1000000000
end

function request()
    next_id = next_id + 1
    return wrk.format(nil, nil, nil, head .. next_id .. tail)
end

function response(status, headers, body)
    if status < 200 or status > 299 then
        non2xx = non2xx + 1
    elseif not body:find('"result"', 1, true)
        or body:find('"isError":true', 1, true)
        or body:find('"isError": true', 1, true) then
        rpc_errors = rpc_errors + 1
    else
        return
    end
    if bad == "" then
        bad = status .. " " .. body:sub(1, 300):gsub("[\r\n]", " ")
    end
end

function done(summary, latency, requests)
    local n2, rpc = 0, 0
    for _, t in ipairs(threads) do
        n2 = n2 + t:get("non2xx")
        rpc = rpc + t:get("rpc_errors")
        local b = t:get("bad")
        if b ~= nil and b ~= "" then
            io.write("WRKBAD " .. b .. "\n")
        end
    end
    local e = summary.errors
    io.write(string.format(
        'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
        '"status":%d,"timeout":%d,"non2xx":%d,"rpc_errors":%d,"p50_us":%d,"p90_us":%d,' ..
        '"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
        summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
        e.status, e.timeout, n2, rpc, latency:percentile(50), latency:percentile(90),
        latency:percentile(99), latency.max, latency.mean))
end
