-- wrk: a realistic week. Each session pings seven times, once a "day": new, then six repeats
-- that change nothing, except that one session in ten upgrades its daemon at its fifth ping
-- (that ping changes a field, the two after it do not). Per 70 pings: 10 new, 1 changed, 59
-- unchanged. 256 sessions are in their week at once, so a session's pings are 256 requests
-- apart, as a relay's are a day apart; ids are random per run, as a relay's are.
math.randomseed(os.time() + math.floor(os.clock() * 1e6))
local run = string.format("%08x", math.random(0, 0x7fffffff))
local window = 256
local counter = 0
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
request = function()
  local slot = counter % window
  local round = math.floor(counter / window)
  counter = counter + 1
  local life, ping = math.floor(round / 7), round % 7
  local upgraded = (slot + life) % 10 == 0 and ping >= 4
  local version = upgraded and "0.9.4" or "0.9.3"
  local id = string.format("mix-%s-%03d-%06d", run, slot, life)
  local body = '{"protocol_version":"1.0.0","daemon_version":"' .. version .. '","session_id":"' ..
    id .. '","platform":"linux","node_version":"v20.11.1","primary_framework":"react"}'
  return wrk.format(nil, "/v1/session", nil, body)
end
