-- wrk: /healthz, with a request built per call like ping.lua, so the client spends the same
-- effort per request on both sides of the ratio.
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/healthz?n=" .. counter)
end
