-- Shared by bench/wrk/etcd.lua and bench/wrk/shardnet.lua: the key space,
-- the value, per-thread seeding and the one result line compare.sh parses.
-- Both systems get the same keys and the same value size, so the only
-- difference between their runs is the server.

local M = {}

M.nkeys = 10000
M.value_size = 256

-- key returns the i-th key of the space (0-based); bench/prefill writes the
-- same names, so every read hits.
function M.key(i)
  return string.format("key-%05d", i)
end

-- value returns value_size printable bytes, random per thread.
function M.value()
  local alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
  local t = {}
  for i = 1, M.value_size do
    local j = math.random(1, #alphabet)
    t[i] = alphabet:sub(j, j)
  end
  return table.concat(t)
end

local b64alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

-- base64 encodes s (standard alphabet, padded), for etcd's JSON gateway.
function M.base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1 = math.floor(n / 262144) % 64
    local c2 = math.floor(n / 4096) % 64
    local c3 = math.floor(n / 64) % 64
    local c4 = n % 64
    out[#out + 1] = b64alphabet:sub(c1 + 1, c1 + 1) .. b64alphabet:sub(c2 + 1, c2 + 1)
      .. (b and b64alphabet:sub(c3 + 1, c3 + 1) or "=")
      .. (c and b64alphabet:sub(c4 + 1, c4 + 1) or "=")
  end
  return table.concat(out)
end

-- Every thread gets its own id (set by setup in the main state) and so its
-- own random sequence: without it all threads would hit the same keys.
local next_id = 0
function M.setup(thread)
  thread:set("thread_id", next_id)
  next_id = next_id + 1
end

function M.seed()
  local id = thread_id or 0
  math.randomseed(os.time() * 1000 + id * 7919 + math.floor(os.clock() * 1e6))
  -- LuaJIT's first draws after seeding are poorly mixed.
  for _ = 1, 10 do math.random() end
end

-- report prints the line compare.sh reads. errors.status counts answers with
-- a status above 399; they are not throughput, so compare.sh subtracts them.
function M.report(summary, latency)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d non2xx=%d connect=%d read=%d write=%d timeout=%d p50_us=%d p99_us=%d mean_us=%d max_us=%d\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), math.floor(latency.mean), latency.max))
end

return M
