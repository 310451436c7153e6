-- Add up to n to one day count without passing its cap; a negative n gives back (never
-- below 0). Counts of one IP's day live in one hash: field "*" (every route) and per route.
-- KEYS: 1 epoch, 2 day counts
-- ARGV: 1 epoch, 2 field, 3 n, 4 cap (-1: none), 5 expires at (s)
-- Returns {code, added, count}: code 1, or -1 epoch refused (added = the epoch held)
local epoch = string.match(redis.call('GET', KEYS[1]) or '', '^([^|]+)|')
if epoch ~= ARGV[1] then return {-1, epoch or false, 0} end
local have = tonumber(redis.call('HGET', KEYS[2], ARGV[2])) or 0
local n = tonumber(ARGV[3])
local cap = tonumber(ARGV[4])
if n < 0 then
  if -n > have then n = -have end
elseif cap >= 0 then
  if n > cap - have then n = cap - have end
  if n < 0 then n = 0 end
end
if n ~= 0 then
  redis.call('HINCRBY', KEYS[2], ARGV[2], n)
  local at = tonumber(ARGV[5])
  local ttl = redis.call('EXPIRETIME', KEYS[2])
  if ttl < at then redis.call('EXPIREAT', KEYS[2], at) end
end
return {1, n, have + n}
