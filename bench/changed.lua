-- wrk: repeats that change a field, of 200 sessions with fixed ids taken in turn, each ping
-- carrying the other of two daemon versions from its session's last ping. A run starts on
-- the first version, so a session whose last ping in the run before was on it repeats
-- unchanged once: about 200 of a run's few thousand pings.
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
local counter = 0
request = function()
  local slot = counter % 200
  local version = (math.floor(counter / 200) % 2 == 0) and "0.9.3" or "0.9.4"
  counter = counter + 1
  local id = string.format("changed-session-%05d", slot)
  local body = '{"protocol_version":"1.0.0","daemon_version":"' .. version .. '","session_id":"' ..
    id .. '","platform":"linux","node_version":"v20.11.1","primary_framework":"react"}'
  return wrk.format(nil, "/v1/session", nil, body)
end
