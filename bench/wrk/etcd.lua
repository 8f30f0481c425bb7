-- wrk load for etcd v3's JSON gateway (grpc-gateway on the client URL),
-- one request per call.
--   wrk ... -s bench/wrk/etcd.lua URL -- MODE
-- MODE: put           POST /v3/kv/put {"key","value"} with a 256-byte value
--       get           POST /v3/kv/range {"key"}: linearizable (etcd's default)
--       serializable  POST /v3/kv/range {"key","serializable":true}: the
--                     member answers from its own state, like shardnet's stale
-- Keys and values are base64 in the JSON, as the gateway requires. Keys are
-- drawn uniformly from the 10,000 that bench/prefill wrote.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")

local requests = {}

setup = common.setup

function init(args)
  local mode = args[1] or "put"
  common.seed()
  local headers = { ["Content-Type"] = "application/json" }
  local value = common.base64(common.value())
  for i = 0, common.nkeys - 1 do
    local key = common.base64(common.key(i))
    local path, body
    if mode == "put" then
      path, body = "/v3/kv/put", '{"key":"' .. key .. '","value":"' .. value .. '"}'
    elseif mode == "get" then
      path, body = "/v3/kv/range", '{"key":"' .. key .. '"}'
    elseif mode == "serializable" then
      path, body = "/v3/kv/range", '{"key":"' .. key .. '","serializable":true}'
    else
      error("etcd.lua: unknown mode " .. mode)
    end
    requests[i] = wrk.format("POST", path, headers, body)
  end
end

function request()
  return requests[math.random(0, common.nkeys - 1)]
end

function done(summary, latency, requests)
  common.report(summary, latency)
end
