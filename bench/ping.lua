-- wrk: valid pings, each from a new session (so every one is a real write).
local counter = 0
local prefix = string.format("b%x", math.random(0, 0xffffff))
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
request = function()
  counter = counter + 1
  local body = '{"protocol_version":"1.0.0","daemon_version":"0.9.3","session_id":"' ..
    prefix .. "-" .. counter ..
    '","platform":"linux","node_version":"v20.11.1","primary_framework":"react"}'
  return wrk.format(nil, "/v1/session", nil, body)
end
