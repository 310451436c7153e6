-- Raise day counts to at least the given values (the store's figures), under the epoch.
-- KEYS: 1 epoch, 2 day counts
-- ARGV: 1 epoch, 2 expires at (s), then field/count pairs
-- Returns {1}, or {-1, the epoch held}
local epoch = string.match(redis.call('GET', KEYS[1]) or '', '^([^|]+)|')
if epoch ~= ARGV[1] then return {-1, epoch or false} end
for i = 3, #ARGV, 2 do
  local want = tonumber(ARGV[i + 1])
  if want > (tonumber(redis.call('HGET', KEYS[2], ARGV[i])) or 0) then
    redis.call('HSET', KEYS[2], ARGV[i], want)
  end
end
if #ARGV > 2 then
  local at = tonumber(ARGV[2])
  if redis.call('EXPIRETIME', KEYS[2]) < at then redis.call('EXPIREAT', KEYS[2], at) end
end
return {1}
