-- GCRA for one (IP, route): take up to `want` tokens that conform now, or peek (want 0).
-- The clock is Redis's own TIME (us), shared by every process. Tokens granted are never
-- given back; a pause in force for the IP or the route grants none.
-- KEYS: 1 epoch, 2 rate (theoretical arrival time, us), 3 pauses (hash route|"*" -> until us)
-- ARGV: 1 epoch, 2 route, 3 want, 4 emission interval us, 5 burst (tokens),
--       6 window us (a take is at most this much of the rate, at least one token; 0: no cap),
--       7 least, a share of the batch (after its caps): fewer conforming grants none, and
--         says when that many will (so a contended key is not drained one token at a time)
-- Returns {code, granted, wait_us, now_us}:
--   code 1: `granted` tokens (0..want); `least` of a batch conform again in `wait_us`
--   code -1: epoch refused (granted = the epoch held, false when missing)
--   code -2: paused; wait_us = the end of the pause (us, absolute)
local held = redis.call('GET', KEYS[1])
local epoch, rebuilt = string.match(held or '', '^([^|]+)|(%d+)$')
if epoch ~= ARGV[1] then return {-1, epoch or false, 0, 0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local pauses = redis.call('HMGET', KEYS[3], '*', ARGV[2])
local paused = 0
for i = 1, 2 do
  local u = tonumber(pauses[i])
  if u and u > now and u > paused then paused = u end
end
if paused > 0 then return {-2, 0, paused, now} end

local interval = tonumber(ARGV[4])
local burst = math.max(1, tonumber(ARGV[5]))
local tau = (burst - 1) * interval
local want = tonumber(ARGV[3])
local window = tonumber(ARGV[6])
if window > 0 then
  local by_window = math.max(1, math.floor(window / interval))
  if want > by_window then want = by_window end
end

-- A key missing just after a rebuild is empty from the rebuild on (no burst granted);
-- otherwise missing means idle.
local tat = tonumber(redis.call('GET', KEYS[2])) or (tonumber(rebuilt) + tau)
local base = math.max(tat, now)
local n = math.floor((now - base + tau) / interval) + 1
if now - base + tau < 0 then n = 0 end
if n > want then n = want end
if n < 0 then n = 0 end
local least = math.max(1, math.min(math.ceil(want * (tonumber(ARGV[7]) or 0)), want))
if want > 0 and n < least then
  return {1, 0, math.ceil(math.max(0, base + (least - 1) * interval - tau - now)), now}
end
if n > 0 then
  base = base + n * interval
  redis.call('SET', KEYS[2], string.format('%d', math.ceil(base)),
    'PX', math.ceil((base - now) / 1000) + 1000)
end
-- When to ask again: when `least` of such a batch conforms (one token with least 0).
local wait = base + (least - 1) * interval - tau - now
if wait < 0 then wait = 0 end
return {1, n, math.ceil(wait), now}
