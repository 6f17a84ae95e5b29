-- wrk: /healthz, with a request built per call like ping.lua (two random numbers and a
-- formatted string), so the client spends about the same effort per request on both sides.
math.randomseed(os.time())
local counter = 0
request = function()
  counter = counter + 1
  local id = string.format("%08x%08x-%x", math.random(0, 0x7fffffff),
    math.random(0, 0x7fffffff), counter)
  return wrk.format("GET", "/healthz?n=" .. id)
end
