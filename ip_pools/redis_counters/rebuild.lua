-- Rebuild one IP's counters under a new epoch after Redis lost them: day counts (raised to
-- at least the given values) and pauses whose end has not passed, then the epoch with the
-- time of the rebuild (rate keys missing after it count as empty from then on).
-- KEYS: 1 epoch, then per day: its counts hash; then the pauses hash (last)
-- ARGV: 1 new epoch, 2 expires at (s) for the day hashes, 3 number of days d, then per day:
--       n, then n field/count pairs; then m, then m route/until-us pairs
-- Returns 1 rebuilt, 0 already at this epoch
local epoch = string.match(redis.call('GET', KEYS[1]) or '', '^([^|]+)|')
if epoch == ARGV[1] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local at = tonumber(ARGV[2])
local days = tonumber(ARGV[3])
local i = 4
for d = 1, days do
  local key = KEYS[1 + d]
  local n = tonumber(ARGV[i])
  for j = 1, n do
    local field = ARGV[i + 2 * j - 1]
    local want = tonumber(ARGV[i + 2 * j])
    if want > (tonumber(redis.call('HGET', key, field)) or 0) then
      redis.call('HSET', key, field, want)
    end
  end
  if n > 0 and redis.call('EXPIRETIME', key) < at then redis.call('EXPIREAT', key, at) end
  i = i + 2 * n + 1
end
local pauses = KEYS[2 + days]
local m = tonumber(ARGV[i])
local longest = 0
for j = 1, m do
  local route = ARGV[i + 2 * j - 1]
  local u = tonumber(ARGV[i + 2 * j])
  if u > now then
    redis.call('HSET', pauses, route, string.format('%d', u))
    if u > longest then longest = u end
  end
end
if longest > 0 and redis.call('PTTL', pauses) < math.ceil((longest - now) / 1000) then
  redis.call('PEXPIRE', pauses, math.ceil((longest - now) / 1000) + 1000)
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. string.format('%d', now))
return 1
