-- wrk: valid pings, each from a new session (so every one is a real write). Session ids are
-- random like a relay's, so the store's inserts land all over its key space, as in production.
math.randomseed(os.time() + math.floor(os.clock() * 1e6))
local counter = 0
local run = string.format("%06x", math.random(0, 0xffffff))
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
request = function()
  counter = counter + 1
  local id = string.format("%08x%08x-%s-%x", math.random(0, 0x7fffffff),
    math.random(0, 0x7fffffff), run, counter)
  local body = '{"protocol_version":"1.0.0","daemon_version":"0.9.3","session_id":"' .. id ..
    '","platform":"linux","node_version":"v20.11.1","primary_framework":"react"}'
  return wrk.format(nil, "/v1/session", nil, body)
end
