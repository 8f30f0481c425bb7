-- wrk load for shardnet's HTTP KV API (docs/api.md), one request per call.
--   wrk ... -s bench/wrk/shardnet.lua URL -- MODE TOKEN
-- MODE: put    PUT /v1/channels/bench/kv/KEY with a 256-byte value
--       get    GET of a key, linearizable (the default level)
--       stale  GET ...?consistency=stale (any replica answers)
--       put16  PUT to a channel drawn per request from bench-0..bench-15
--       puts   PUT to a channel drawn per request from the comma-separated
--              list given after the token (bench/scaleout.sh sends each
--              node the channels it leads: `-- puts TOKEN a,b,c`)
-- Keys are drawn uniformly from the 10,000 that bench/prefill wrote.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")

local mode, headers
local channels = {} -- puts: the channels to draw from
local requests = {} -- prebuilt, so the client spends its CPU on sending
local value

setup = common.setup

function init(args)
  mode = args[1] or "put"
  local token = args[2] or ""
  common.seed()
  headers = { ["Authorization"] = "Bearer " .. token }
  value = common.value()
  if mode == "put16" or mode == "puts" then
    headers["Content-Type"] = "application/octet-stream"
    if mode == "puts" then
      for ch in string.gmatch(args[3] or "", "[^,]+") do
        channels[#channels + 1] = ch
      end
      if #channels == 0 then
        error("shardnet.lua: puts needs a comma-separated channel list after the token")
      end
    end
    return
  end
  for i = 0, common.nkeys - 1 do
    local path = "/v1/channels/bench/kv/" .. common.key(i)
    if mode == "put" then
      headers["Content-Type"] = "application/octet-stream"
      requests[i] = wrk.format("PUT", path, headers, value)
    elseif mode == "get" then
      requests[i] = wrk.format("GET", path, headers)
    elseif mode == "stale" then
      requests[i] = wrk.format("GET", path .. "?consistency=stale", headers)
    else
      error("shardnet.lua: unknown mode " .. mode)
    end
  end
end

function request()
  local i = math.random(0, common.nkeys - 1)
  if mode == "put16" then
    local ch = math.random(0, 15)
    return wrk.format("PUT", "/v1/channels/bench-" .. ch .. "/kv/" .. common.key(i), headers, value)
  elseif mode == "puts" then
    local ch = channels[math.random(1, #channels)]
    return wrk.format("PUT", "/v1/channels/" .. ch .. "/kv/" .. common.key(i), headers, value)
  end
  return requests[i]
end

function done(summary, latency, requests)
  common.report(summary, latency)
end
