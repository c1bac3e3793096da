//! The Lua scripts that keep the windows in Redis: the same ring of
//! sub-window counters as the in-memory store, computed server-side.
//!
//! Each window is one hash: field `h` is the newest slot, `s` the running
//! sum of the live slots, and one field per live slot (its absolute number,
//! in wall-clock sub-windows since the UNIX epoch) with its count. Advancing
//! the head removes the slots that fell out of the ring, exactly as
//! `Ring::advance` does in memory: O(1) amortised per admission. A hash's
//! expiry (two ring spans) is refreshed whenever its head moves (at least
//! once per sub-window of activity), so an idle key disappears.
//!
//! Slot numbers are written with `%d`: Lua's default number formatting
//! switches to exponents beyond 14 digits.

use redis::Script;

/// Functions shared by the scripts.
const COMMON: &str = r#"
local function f(x) return string.format('%d', x) end
local client_clock = tonumber(ARGV[1]) >= 0
local function now_us(arg)
  local n = tonumber(arg)
  if n < 0 then
    local t = redis.call('TIME')
    n = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  return n
end
-- Moves the ring's head to `slot` (never backwards); returns head, sum.
-- Refreshes the hash's expiry when the head moved or the hash is new, or
-- always on the caller's clock (logical and real time may differ there):
-- a head that did not move was set less than one sub-window ago, with an
-- expiry of two ring spans.
local function advance(key, slot, K, ttl, always)
  local hs = redis.call('HMGET', key, 'h', 's')
  local h = tonumber(hs[1])
  if not h then
    redis.call('HSET', key, 'h', f(slot), 's', '0')
    redis.call('PEXPIRE', key, ttl)
    return slot, 0
  end
  local s = tonumber(hs[2]) or 0
  if slot <= h then
    if always then redis.call('PEXPIRE', key, ttl) end
    return h, s
  end
  if slot - h >= K + 1 then
    redis.call('DEL', key)
    redis.call('HSET', key, 'h', f(slot), 's', '0')
    redis.call('PEXPIRE', key, ttl)
    return slot, 0
  end
  for x = h + 1, slot do
    local old = f(x - K - 1)
    local v = redis.call('HGET', key, old)
    if v then
      s = s - tonumber(v)
      redis.call('HDEL', key, old)
    end
  end
  redis.call('HSET', key, 'h', f(slot), 's', f(s))
  redis.call('PEXPIRE', key, ttl)
  return slot, s
end
local function live(slot, h, K) return slot <= h and slot + K >= h end
-- Adds to `slot` if it is live, else to the head.
local function add(key, slot, h, K, s, amount)
  if amount <= 0 then return s end
  local target = slot
  if not live(slot, h, K) then target = h end
  redis.call('HINCRBY', key, f(target), f(amount))
  s = s + amount
  redis.call('HSET', key, 's', f(s))
  return s
end
-- Removes up to `amount` from `slot` if it is still live.
local function sub(key, slot, h, K, s, amount)
  if amount <= 0 or not live(slot, h, K) then return s end
  local field = f(slot)
  local v = tonumber(redis.call('HGET', key, field)) or 0
  local take = math.min(amount, v)
  if take <= 0 then return s end
  if take == v then
    redis.call('HDEL', key, field)
  else
    redis.call('HINCRBY', key, field, f(-take))
  end
  s = s - take
  redis.call('HSET', key, 's', f(s))
  return s
end
local function adjust(key, slot, h, K, s, reserved, actual)
  if actual < reserved then return sub(key, slot, h, K, s, reserved - actual) end
  return add(key, slot, h, K, s, actual - reserved)
end
-- Settlement sequence numbers per instance: field = instance,
-- value = 'seq:last_touch_us'. Fields of instances silent for `stale` µs
-- (dead) are pruned when another is recorded.
local function seq_last(key, instance)
  local v = redis.call('HGET', key, instance)
  if not v then return 0 end
  return tonumber(string.match(v, '^(%d+)')) or 0
end
local function seq_record(key, instance, seq, now, stale, ttl)
  local all = redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    local touch = tonumber(string.match(all[i + 1], ':(%d+)$'))
    if all[i] ~= instance and (touch == nil or touch + stale < now) then
      redis.call('HDEL', key, all[i])
    end
  end
  redis.call('HSET', key, instance, seq .. ':' .. string.format('%d', now))
  redis.call('PEXPIRE', key, ttl)
end
-- The first slot after the head at which the sum will be <= target.
local function slot_with_room(key, h, s, K, target)
  if s <= target then return nil end
  local fields = {}
  local first = math.max(h - K, 0)
  for x = first, h do fields[#fields + 1] = f(x) end
  local vals = redis.call('HMGET', key, unpack(fields))
  local remaining = s
  for i, v in ipairs(vals) do
    remaining = remaining - (tonumber(v) or 0)
    if remaining <= target then return first + i - 1 + K + 1 end
  end
  return h + K + 1
end
"#;

/// Reservation. KEYS: tokens, requests, day hashes. ARGV: now_us (-1 for
/// the server's clock), g_us, K, day_g_us, day_K, limit_tokens,
/// limit_requests (-1 none), limit_day (-1 none), charge_tokens,
/// charge_requests, ttl_ms, day_ttl_ms, tenant name and weight (empty and 0
/// without a tenant), re-seed tokens and requests (applied only when the
/// token ring does not exist: Redis restarted empty); for a tenant, also
/// KEYS: the tenant's token ring and the key's contention record.
///
/// With a tenant, a charge that fits the windows is still refused when
/// other tenants contend (were refused and are waiting for room) and it
/// would take the tenant's usage in the window beyond its weighted share of
/// the token limit, `limit * weight / (weight + weights of the contending
/// others)` (at least the charge). A refused tenant records itself as
/// contending until its expected retry (at most one window ahead) plus a
/// tenth of the window (at least two sub-windows).
///
/// Returns `{1, slot, day_slot, now_us, tokens, requests, day}` when
/// admitted, `{0, window (1 tokens, 2 requests, 3 day, 4 the tenant's
/// share), room_us (-1 never), now_us, tokens, requests, day}` when
/// refused.
const RESERVE: &str = r#"
local now = now_us(ARGV[1])
local g, K, dg, dK = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local lt, lr, ld = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local ct, cr = tonumber(ARGV[9]), tonumber(ARGV[10])
local slot, dslot = math.floor(now / g), math.floor(now / dg)
local seeded = redis.call('EXISTS', KEYS[1]) == 0 and tonumber(ARGV[15]) > 0
local th, ts = advance(KEYS[1], slot, K, ARGV[11], client_clock)
local rh, rs = advance(KEYS[2], slot, K, ARGV[11], client_clock)
local dh, ds = advance(KEYS[3], dslot, dK, ARGV[12], client_clock)
if seeded then
  -- The rings are gone (Redis restarted empty): start from this instance's
  -- part of the window as it was last seen.
  ts = add(KEYS[1], th, th, K, ts, tonumber(ARGV[15]))
  rs = add(KEYS[2], rh, rh, K, rs, tonumber(ARGV[16]))
  ds = add(KEYS[3], dh, dh, dK, ds, tonumber(ARGV[15]))
end
local checks = {
  {1, KEYS[1], th, ts, lt, ct, K, g},
  {2, KEYS[2], rh, rs, lr, cr, K, g},
  {3, KEYS[3], dh, ds, ld, ct, dK, dg},
}
local refused, kind, room = false, 0, nil
for _, c in ipairs(checks) do
  local lim, amount = c[5], c[6]
  if lim >= 0 and c[4] + amount > lim then
    local at = nil
    if lim >= amount then
      local x = slot_with_room(c[2], c[3], c[4], c[7], lim - amount) or (c[3] + 1)
      at = x * c[8]
    end
    local later
    if not refused then later = true
    elseif at ~= nil then later = (room ~= nil and at > room)
    else later = true end
    if later then kind = c[1]; room = at end
    refused = true
  end
end
-- Tenant shares (KEYS[4]: the tenant's token ring, KEYS[5]: the key's
-- contention record, field = tenant, value = 'until_us:weight').
local tenant = #KEYS >= 5
local tth, tus
if tenant then
  local reg, tname, tw = KEYS[5], ARGV[13], tonumber(ARGV[14])
  tth, tus = advance(KEYS[4], slot, K, ARGV[11], client_clock)
  if not refused then
    local sumw, others = tw, false
    local all = redis.call('HGETALL', reg)
    for i = 1, #all, 2 do
      local u, w = string.match(all[i + 1], '^(%d+):(%d+)$')
      u, w = tonumber(u), tonumber(w)
      if u == nil or u < now then
        redis.call('HDEL', reg, all[i])
      elseif all[i] ~= tname then
        sumw = sumw + w
        others = true
      end
    end
    if others then
      local share = math.max(math.floor(lt * tw / sumw), ct)
      if tus + ct > share then
        local x = slot_with_room(KEYS[4], tth, tus, K, share - ct) or (tth + 1)
        refused, kind, room = true, 4, x * g
      end
    end
  end
  if refused and room ~= nil then
    -- Contending until its retry, plus a tenth of the window (at least
    -- two sub-windows): a waiter may retry a little after the room it was
    -- told of (pacing, its turn in its process's queue).
    -- At most one window ahead (a day-window refusal may name a room hours
    -- away, and the waiter is shed long before).
    local until_us = math.min(math.max(room, now), now + K * g) + math.max(2, math.ceil(K / 10)) * g
    redis.call('HSET', reg, tname, f(until_us) .. ':' .. ARGV[14])
    redis.call('PEXPIRE', reg, ARGV[11])
  end
end
if refused then return {0, kind, room or -1, now, ts, rs, ds} end
ts = add(KEYS[1], slot, th, K, ts, ct)
rs = add(KEYS[2], slot, rh, K, rs, cr)
ds = add(KEYS[3], dslot, dh, dK, ds, ct)
local used, dused = slot, dslot
if not live(slot, th, K) then used = th end
if not live(dslot, dh, dK) then dused = dh end
if tenant then add(KEYS[4], used, tth, K, tus, ct) end
return {1, used, dused, now, ts, rs, ds}
"#;

/// Settlement (also the merge of a degraded period's local charges).
/// KEYS: tokens, requests, day, applied-sequence hash. ARGV: now_us, g_us,
/// K, day_g_us, day_K, slot (-1: the current one), day_slot (-1),
/// reserved_tokens, reserved_requests, reserved_day, actual_tokens,
/// actual_requests, actual_day, ttl_ms, day_ttl_ms, instance field, seq,
/// stale_us (a silent instance's sequence record is pruned after it);
/// optional KEYS[5]: the tenant's token ring, adjusted too when the slot is
/// given.
///
/// Idempotent: the instance's sequence number for this key is recorded,
/// and a settlement whose number is not above the recorded one (a replay
/// after a lost reply) is skipped. Returns `{applied, slot, day_slot,
/// now_us, tokens, requests, day}`.
const SETTLE: &str = r#"
local now = now_us(ARGV[1])
local g, K, dg, dK = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local cur, dcur = math.floor(now / g), math.floor(now / dg)
local th, ts = advance(KEYS[1], cur, K, ARGV[14], client_clock)
local rh, rs = advance(KEYS[2], cur, K, ARGV[14], client_clock)
local dh, ds = advance(KEYS[3], dcur, dK, ARGV[15], client_clock)
local seq = tonumber(ARGV[17])
local last = seq_last(KEYS[4], ARGV[16])
if seq <= last then return {0, -1, -1, now, ts, rs, ds} end
seq_record(KEYS[4], ARGV[16], ARGV[17], now, tonumber(ARGV[18]), ARGV[15])
local slot, dslot = tonumber(ARGV[6]), tonumber(ARGV[7])
if slot < 0 then slot = th end
if dslot < 0 then dslot = dh end
ts = adjust(KEYS[1], slot, th, K, ts, tonumber(ARGV[8]), tonumber(ARGV[11]))
rs = adjust(KEYS[2], slot, rh, K, rs, tonumber(ARGV[9]), tonumber(ARGV[12]))
ds = adjust(KEYS[3], dslot, dh, dK, ds, tonumber(ARGV[10]), tonumber(ARGV[13]))
if #KEYS >= 5 and tonumber(ARGV[6]) >= 0 then
  local tth, tus = advance(KEYS[5], cur, K, ARGV[14], client_clock)
  adjust(KEYS[5], slot, tth, K, tus, tonumber(ARGV[8]), tonumber(ARGV[11]))
end
return {1, slot, dslot, now, ts, rs, ds}
"#;

/// A snapshot. KEYS: tokens, requests, day. ARGV: now_us, g_us, K,
/// day_g_us, day_K, ttl_ms, day_ttl_ms. Returns `{now_us, tokens,
/// requests, day}`.
const SNAPSHOT: &str = r#"
local now = now_us(ARGV[1])
local g, K, dg, dK = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local _, ts = advance(KEYS[1], math.floor(now / g), K, ARGV[6], client_clock)
local _, rs = advance(KEYS[2], math.floor(now / g), K, ARGV[6], client_clock)
local _, ds = advance(KEYS[3], math.floor(now / dg), dK, ARGV[7], client_clock)
return {now, ts, rs, ds}
"#;

/// Functions of the fixed-window scripts: the window hash `<base>:fx`
/// (fields `w` window index, `u` usage settled in it, `q` requests admitted
/// in it, `dw` day index, `du` usage settled in the day) and the
/// reservations in flight `<base>:rsv` (one field per instance,
/// `tokens:last_touch_us`; an instance not heard of for `stale` µs is
/// pruned: it died with calls in flight).
const FIXED: &str = r#"
local function fixed_load(key, wi, di)
  local v = redis.call('HMGET', key, 'w', 'u', 'q', 'dw', 'du')
  local w, u, q, dw, du = tonumber(v[1]), tonumber(v[2]) or 0, tonumber(v[3]) or 0, tonumber(v[4]), tonumber(v[5]) or 0
  if w == nil or w < wi then w, u, q = wi, 0, 0 end
  if dw == nil or dw < di then dw, du = di, 0 end
  return w, u, q, dw, du
end
local function fixed_store(key, w, u, q, dw, du, ttl)
  redis.call('HSET', key, 'w', f(w), 'u', f(math.max(u, 0)), 'q', f(math.max(q, 0)), 'dw', f(dw), 'du', f(math.max(du, 0)))
  redis.call('PEXPIRE', key, ttl)
end
-- Sum of the live instances' reservations; prunes the dead ones.
local function reserved_total(key, now, stale)
  local all = redis.call('HGETALL', key)
  local total = 0
  for i = 1, #all, 2 do
    local t, touch = string.match(all[i + 1], '^(%-?%d+):(%d+)$')
    t, touch = tonumber(t), tonumber(touch)
    if t == nil or touch + stale < now then
      redis.call('HDEL', key, all[i])
    elseif t > 0 then
      total = total + t
    end
  end
  return total
end
local function reserved_add(key, instance, amount, now, ttl)
  local cur = redis.call('HGET', key, instance)
  local t = 0
  if cur then t = tonumber(string.match(cur, '^(%-?%d+):')) or 0 end
  t = math.max(t + amount, 0)
  redis.call('HSET', key, instance, f(t) .. ':' .. f(now))
  redis.call('PEXPIRE', key, ttl)
end
"#;

/// Reservation, fixed windows. KEYS: the window hash, the reservations
/// hash; for a tenant also its token ring and the contention record.
/// ARGV: now_us (-1 for the server's clock), window_us, day_us,
/// limit_tokens, limit_requests (-1 none), limit_day (-1 none),
/// charge_tokens, charge_requests, day_ttl_ms, instance, stale_us, g_us, K,
/// ring_ttl_ms, the tenant's name and weight (empty and 0 without one), and
/// the re-seed: settled tokens, requests, and this instance's tokens in
/// flight, applied only when the window hash does not exist (Redis
/// restarted empty; zero when the caller knows of no usage in this
/// window).
///
/// Admits iff settled in the window + every live instance's reservations +
/// the charge fit (and the requests, and the day); with a tenant, the share
/// rule of the sliding script, on the tenant's sliding ring. A refusal's
/// room is the next window (or day), or a twentieth of a window ahead when
/// only the reservations in flight hold the room (other processes'
/// settlements are not signalled), `-1` when the charge exceeds the limit. Returns the sliding script's shapes, with the window index as the
/// slot and the tenant ring's slot as the day slot.
const RESERVE_FIXED: &str = r#"
local now = now_us(ARGV[1])
local W, D = tonumber(ARGV[2]), tonumber(ARGV[3])
local lt, lr, ld = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local ct, cr = tonumber(ARGV[7]), tonumber(ARGV[8])
local g, K = tonumber(ARGV[12]), tonumber(ARGV[13])
local wi, di = math.floor(now / W), math.floor(now / D)
local seeded = redis.call('EXISTS', KEYS[1]) == 0
  and (tonumber(ARGV[17]) > 0 or tonumber(ARGV[19]) > 0)
local w, u, q, dw, du = fixed_load(KEYS[1], wi, di)
if seeded then
  -- The window hash is gone (Redis restarted empty): start from this
  -- instance's part of the window as it was last seen, and its own calls
  -- in flight.
  u, q, du = u + tonumber(ARGV[17]), q + tonumber(ARGV[18]), du + tonumber(ARGV[17])
  fixed_store(KEYS[1], w, u, q, dw, du, ARGV[9])
  if tonumber(ARGV[19]) > 0 and redis.call('HEXISTS', KEYS[2], ARGV[10]) == 0 then
    reserved_add(KEYS[2], ARGV[10], tonumber(ARGV[19]), now, ARGV[9])
  end
end
local rsv = reserved_total(KEYS[2], now, tonumber(ARGV[11]))
-- Room for tokens comes at the next window, or sooner when it is the
-- calls in flight (of any process) that hold it: their settlements are
-- not signalled across processes, so a waiter looks again after a
-- twentieth of the window.
local token_room = (w + 1) * W
if u + ct <= lt then
  token_room = math.min(token_room, now + math.max(math.floor(W / 20), 1))
end
local checks = {
  {1, u + rsv, lt, ct, token_room},
  {2, q, lr, cr, (w + 1) * W},
  {3, du + rsv, ld, ct, (dw + 1) * D},
}
local refused, kind, room = false, 0, nil
for _, c in ipairs(checks) do
  local lim, amount = c[3], c[4]
  if lim >= 0 and c[2] + amount > lim then
    local at = nil
    if lim >= amount then at = c[5] end
    local later
    if not refused then later = true
    elseif at ~= nil then later = (room ~= nil and at > room)
    else later = true end
    if later then kind = c[1]; room = at end
    refused = true
  end
end
local slot = math.floor(now / g)
local tenant = #KEYS >= 4
local tth, tus
if tenant then
  local reg, tname, tw = KEYS[4], ARGV[15], tonumber(ARGV[16])
  tth, tus = advance(KEYS[3], slot, K, ARGV[14], client_clock)
  if not refused then
    local sumw, others = tw, false
    local all = redis.call('HGETALL', reg)
    for i = 1, #all, 2 do
      local uu, ww = string.match(all[i + 1], '^(%d+):(%d+)$')
      uu, ww = tonumber(uu), tonumber(ww)
      if uu == nil or uu < now then
        redis.call('HDEL', reg, all[i])
      elseif all[i] ~= tname then
        sumw = sumw + ww
        others = true
      end
    end
    if others then
      local share = math.max(math.floor(lt * tw / sumw), ct)
      if tus + ct > share then
        local x = slot_with_room(KEYS[3], tth, tus, K, share - ct) or (tth + 1)
        refused, kind, room = true, 4, x * g
      end
    end
  end
  if refused and room ~= nil then
    local until_us = math.min(math.max(room, now), now + K * g) + math.max(2, math.ceil(K / 10)) * g
    redis.call('HSET', reg, tname, f(until_us) .. ':' .. ARGV[16])
    redis.call('PEXPIRE', reg, ARGV[14])
  end
end
if refused then return {0, kind, room or -1, now, u + rsv, q, du + rsv} end
q = q + cr
fixed_store(KEYS[1], w, u, q, dw, du, ARGV[9])
reserved_add(KEYS[2], ARGV[10], ct, now, ARGV[9])
local used = slot
if tenant then
  if not live(slot, tth, K) then used = tth end
  add(KEYS[3], used, tth, K, tus, ct)
end
return {1, w, used, now, u + rsv + ct, q, du + rsv + ct}
"#;

/// Settlement, fixed windows. KEYS: the window hash, the reservations
/// hash, the applied-sequence hash; optional KEYS[4]: the tenant's ring.
/// ARGV: now_us, window_us, day_us, kind (0 a reservation made in Redis,
/// 1 a local reservation whose charges were merged, 2 the merge of local
/// charges), window (of the reservation or merge; -1 none), ring slot,
/// reserved_tokens, reserved_requests, actual_tokens, actual_requests,
/// actual_day (merges), day_ttl_ms, instance field, seq, stale_us, g_us, K,
/// ring_ttl_ms.
///
/// The real usage is billed to the current window; the reservation leaves
/// this instance's in-flight count; the request stays in the window it was
/// admitted in (refunded there if still current). Idempotent like the
/// sliding script. Returns `{applied, window, day, now_us, tokens,
/// requests, day_tokens}`.
const SETTLE_FIXED: &str = r#"
local now = now_us(ARGV[1])
local W, D = tonumber(ARGV[2]), tonumber(ARGV[3])
local wi, di = math.floor(now / W), math.floor(now / D)
local w, u, q, dw, du = fixed_load(KEYS[1], wi, di)
local stale = tonumber(ARGV[15])
local seq = tonumber(ARGV[14])
local last = seq_last(KEYS[3], ARGV[13])
if seq <= last then
  local rsv = reserved_total(KEYS[2], now, stale)
  return {0, -1, -1, now, u + rsv, q, du + rsv}
end
seq_record(KEYS[3], ARGV[13], ARGV[14], now, stale, ARGV[12])
local kind, win = tonumber(ARGV[4]), tonumber(ARGV[5])
local rt, rr = tonumber(ARGV[7]), tonumber(ARGV[8])
local at, ar, ad = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
if kind == 2 then
  u, q, du = u + at, q + ar, du + ad
  win = w
else
  if kind == 0 then
    reserved_add(KEYS[2], ARGV[13], -rt, now, ARGV[12])
    u, du = u + at, du + at
  elseif win == w then
    u, du = u + at - rt, du + at - rt
  elseif at > rt then
    u, du = u + at - rt, du + at - rt
  end
  if win == w then
    q = q - rr + ar
  elseif ar > rr then
    q = q + ar - rr
  end
end
fixed_store(KEYS[1], w, u, q, dw, du, ARGV[12])
if #KEYS >= 4 and kind == 0 then
  local g, K = tonumber(ARGV[16]), tonumber(ARGV[17])
  local tth, tus = advance(KEYS[4], math.floor(now / g), K, ARGV[18], client_clock)
  adjust(KEYS[4], tonumber(ARGV[6]), tth, K, tus, rt, at)
end
local rsv = reserved_total(KEYS[2], now, stale)
return {1, win, dw, now, math.max(u, 0) + rsv, math.max(q, 0), math.max(du, 0) + rsv}
"#;

/// A snapshot, fixed windows. KEYS: the window hash, the reservations
/// hash. ARGV: now_us, window_us, day_us, stale_us. Returns `{now_us,
/// tokens, requests, day}`.
const SNAPSHOT_FIXED: &str = r#"
local now = now_us(ARGV[1])
local W, D = tonumber(ARGV[2]), tonumber(ARGV[3])
local w, u, q, dw, du = fixed_load(KEYS[1], math.floor(now / W), math.floor(now / D))
local rsv = reserved_total(KEYS[2], now, tonumber(ARGV[4]))
return {now, u + rsv, q, du + rsv}
"#;

/// Instance heartbeat. KEYS: the instances sorted set. ARGV: member,
/// ttl_ms. Scores are expiry times on the server's clock; returns the
/// number of live instances.
const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], string.format('%d', now + ttl), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now))
redis.call('PEXPIRE', KEYS[1], string.format('%d', 2 * ttl))
return redis.call('ZCARD', KEYS[1])
"#;

/// The scripts, with their SHA1s.
pub(crate) struct Scripts {
    pub(crate) reserve: Script,
    pub(crate) settle: Script,
    pub(crate) snapshot: Script,
    pub(crate) reserve_fixed: Script,
    pub(crate) settle_fixed: Script,
    pub(crate) snapshot_fixed: Script,
    pub(crate) heartbeat: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        let with_common = |body: &str| Script::new(&format!("{COMMON}\n{body}"));
        let with_fixed = |body: &str| Script::new(&format!("{COMMON}\n{FIXED}\n{body}"));
        Scripts {
            reserve: with_common(RESERVE),
            settle: with_common(SETTLE),
            snapshot: with_common(SNAPSHOT),
            reserve_fixed: with_fixed(RESERVE_FIXED),
            settle_fixed: with_fixed(SETTLE_FIXED),
            snapshot_fixed: with_fixed(SNAPSHOT_FIXED),
            heartbeat: Script::new(HEARTBEAT),
        }
    }

    pub(crate) fn all(&self) -> [&Script; 7] {
        [
            &self.reserve,
            &self.settle,
            &self.snapshot,
            &self.reserve_fixed,
            &self.settle_fixed,
            &self.snapshot_fixed,
            &self.heartbeat,
        ]
    }
}
