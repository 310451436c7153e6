-- Pause an IP for a route ("*": every route) until an absolute time, and tell every process.
-- A later call replaces the end (an earlier one shortens the pause; 0 lifts it).
-- KEYS: 1 epoch, 2 pauses (hash route -> until us)
-- ARGV: 1 epoch, 2 route, 3 until us, 4 channel, 5 message
-- Returns {code}: 1, or {-1, the epoch held}
local epoch = string.match(redis.call('GET', KEYS[1]) or '', '^([^|]+)|')
if epoch ~= ARGV[1] then return {-1, epoch or false} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local until_us = tonumber(ARGV[3])
if until_us > now then
  redis.call('HSET', KEYS[2], ARGV[2], string.format('%d', until_us))
else
  redis.call('HDEL', KEYS[2], ARGV[2])
end
-- Drop ended pauses; keep the hash as long as its longest one.
local all = redis.call('HGETALL', KEYS[2])
local longest = 0
for i = 1, #all, 2 do
  local u = tonumber(all[i + 1]) or 0
  if u <= now then redis.call('HDEL', KEYS[2], all[i]) elseif u > longest then longest = u end
end
if longest > 0 then
  redis.call('PEXPIRE', KEYS[2], math.ceil((longest - now) / 1000) + 1000)
end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return {1}
