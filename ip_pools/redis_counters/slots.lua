-- Connection slots as leases for one (IP, route): a sorted set of holder ids scored by the
-- lease's end (ms, Redis TIME). Expired leases are pruned first, so a dead holder's slot
-- comes back by itself. Acquire and renew are one call: a holder already in keeps its slot.
-- KEYS: 1 epoch, 2 slots
-- ARGV: 1 epoch, 2 holder ("" to only count), 3 limit, 4 ttl ms
-- Returns {code, held, count}: code 1 (held 1 or 0; count of leases after), -1 epoch refused
local epoch = string.match(redis.call('GET', KEYS[1]) or '', '^([^|]+)|')
if epoch ~= ARGV[1] then return {-1, epoch or false, 0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local count = redis.call('ZCARD', KEYS[2])
if ARGV[2] == '' then return {1, 0, count} end
local ttl = tonumber(ARGV[4])
if not redis.call('ZSCORE', KEYS[2], ARGV[2]) then
  if count >= tonumber(ARGV[3]) then return {1, 0, count} end
  count = count + 1
end
redis.call('ZADD', KEYS[2], now + ttl, ARGV[2])
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return {1, 1, count}
