-- wrk: repeats that change nothing, of 2,000 sessions with fixed ids (the harness's warm-up run
-- makes them known first), picked at random. A relay pings about once a day with the same
-- record, so this is most of a real week's pings.
math.randomseed(os.time() + math.floor(os.clock() * 1e6))
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
request = function()
  local id = string.format("unchanged-session-%05d", math.random(0, 1999))
  local body = '{"protocol_version":"1.0.0","daemon_version":"0.9.3","session_id":"' .. id ..
    '","platform":"linux","node_version":"v20.11.1","primary_framework":"react"}'
  return wrk.format(nil, "/v1/session", nil, body)
end
