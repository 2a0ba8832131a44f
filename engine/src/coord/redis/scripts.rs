//! The Lua scripts the coordinator runs: each takes all its keys at once,
//! so a lock set is taken whole or not at all. In a cluster their keys
//! share one hash slot (see `Servers::needs_hash_tag`).

/// Takes every lock/last pair in KEYS (the seq key last) for ARGV[1] with
/// TTL ARGV[2] ms, or none: {1, stamp, expired owners...} or {0, holder}.
pub(super) const LOCK: &str = r#"
local owner, ttl = ARGV[1], tonumber(ARGV[2])
local n = #KEYS - 1
for i = 1, n, 2 do
  local cur = redis.call('GET', KEYS[i])
  if cur and cur ~= owner then return {0, cur} end
end
local out = {1, tonumber(redis.call('GET', KEYS[#KEYS]) or '-1')}
for i = 1, n, 2 do
  local last = redis.call('GET', KEYS[i + 1])
  if last and last ~= owner then table.insert(out, last) end
  redis.call('SET', KEYS[i], owner, 'PX', ttl)
  redis.call('SET', KEYS[i + 1], owner, 'PX', ttl * 20)
end
return out
"#;

/// Drops the lock/last pairs in KEYS that ARGV[1] still owns.
pub(super) const UNLOCK: &str = r#"
for i = 1, #KEYS, 2 do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
  if redis.call('GET', KEYS[i + 1]) == ARGV[1] then redis.call('DEL', KEYS[i + 1]) end
end
return 1
"#;

/// UNLOCK and STAMP in one: KEYS = lock/last pairs, then the seq key and
/// the push gate; ARGV = owner, seq, channel, gate per listener (µs).
/// Returns as STAMP.
pub(super) const RELEASE: &str = r#"
local n = #KEYS - 2
for i = 1, n, 2 do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
  if redis.call('GET', KEYS[i + 1]) == ARGV[1] then redis.call('DEL', KEYS[i + 1]) end
end
local cur = tonumber(redis.call('GET', KEYS[n + 1]) or '0')
if tonumber(ARGV[2]) > cur then
  redis.call('SET', KEYS[n + 1], ARGV[2])
  if redis.call('SET', KEYS[n + 2], ARGV[2], 'PX', 1000, 'NX') then
    local heard = redis.call('PUBLISH', ARGV[3], ARGV[2])
    local ms = math.floor(heard * tonumber(ARGV[4]) / 1000)
    if ms < 1 then redis.call('DEL', KEYS[n + 2]) else redis.call('PEXPIRE', KEYS[n + 2], ms) end
    return {2, ms}
  end
  return {1, redis.call('PTTL', KEYS[n + 2])}
end
return {0, 0}
"#;

/// Extends the locks in KEYS to ARGV[2] ms if ARGV[1] holds all of them.
pub(super) const RENEW: &str = r#"
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) ~= ARGV[1] then return 0 end
end
for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
return 1
"#;

/// Raises the seq key KEYS[1] to ARGV[1] (never lowers it) and pushes it
/// on channel ARGV[2] unless the volume's push gate KEYS[2] is shut. A
/// push shuts the gate for ARGV[3] µs per listener that heard it (none
/// when that is under a millisecond): every push wakes every listener, so
/// the listeners together wake about as often however many there are.
/// Whoever shut the gate pushes at its end what was raised meanwhile
/// (`PUSH_LATE`). Returns {0, 0} when the stamp was at or past ARGV[1]
/// already, {1, ms} raised but held back by a gate that opens in ms, {2,
/// ms} pushed and the gate shut for ms.
pub(super) const STAMP: &str = r#"
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > cur then
  redis.call('SET', KEYS[1], ARGV[1])
  if redis.call('SET', KEYS[2], ARGV[1], 'PX', 1000, 'NX') then
    local heard = redis.call('PUBLISH', ARGV[2], ARGV[1])
    local ms = math.floor(heard * tonumber(ARGV[3]) / 1000)
    if ms < 1 then redis.call('DEL', KEYS[2]) else redis.call('PEXPIRE', KEYS[2], ms) end
    return {2, ms}
  end
  return {1, redis.call('PTTL', KEYS[2])}
end
return {0, 0}
"#;

/// Pushes the stamp KEYS[1] on channel ARGV[2] if it is past ARGV[1] (the
/// newest push the caller knows of) and the push gate KEYS[2] is open or
/// still holds ARGV[1] (the caller's own push, at its interval's end: the
/// server's clock and the caller's need not agree to the millisecond),
/// shutting the gate as STAMP does (ARGV[3] µs per listener). Returns
/// {stamp pushed, ms the gate is shut}, or {0, 0}: none to push, or the
/// gate is another push's (which carried a stamp at least as new as every
/// raise before it, and is followed by one at its end).
pub(super) const PUSH_LATE: &str = r#"
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur <= tonumber(ARGV[1]) then return {0, 0} end
local gate = redis.call('GET', KEYS[2])
if gate and gate ~= ARGV[1] then return {0, 0} end
local heard = redis.call('PUBLISH', ARGV[2], cur)
local ms = math.floor(heard * tonumber(ARGV[3]) / 1000)
if ms < 1 then redis.call('DEL', KEYS[2]) else redis.call('SET', KEYS[2], cur, 'PX', ms) end
return {cur, ms}
"#;

/// The seq key KEYS[1] and who vouches for it: the `run_id` of the server
/// that holds it, and the volume's life token KEYS[2] on that server, set
/// to ARGV[1] if it has none. The id comes from the same server as the
/// stamp: in a cluster, that is the node of the key's slot, which a
/// failover replaces without breaking any connection this process sees.
/// A server emptied while it runs (FLUSHALL, an eviction) keeps its
/// `run_id` but loses the token, so the next reader sets a new one.
pub(super) const READ_STAMP: &str = r#"
local id = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
local got = redis.call('MGET', KEYS[1], KEYS[2])
local life = got[2]
if not life then
  life = ARGV[1]
  redis.call('SET', KEYS[2], life)
end
if not id then return {got[1] or false, false} end
return {got[1] or false, id .. '/' .. life}
"#;

/// Takes ARGV[1]'s place in the queue for the log positions of a window
/// of ARGV[7] positions after ARGV[4] (the window's index i is position
/// ARGV[4] + i), of which KEYS[1..m] (m = #KEYS - 3) are the keys of
/// indexes ARGV[6] .. ARGV[6] + m - 1; then the key of index 1, the key of
/// the volume's first position not known to be taken, the seq key last.
/// The first position from there that is free or already ARGV[1]'s is
/// set to it for ARGV[2] ms, and the one it held at index ARGV[3] (0: none
/// in the window), if later, is freed; ARGV[5] is 1 when every position
/// up to ARGV[4] is known to be taken. Looking starts at the first
/// position not known to be taken (or at the place held, if earlier), not
/// at the window's start: with many hosts the positions right after a
/// caller's newest record are all held, and reading each of them cost the
/// server work that grew with the hosts. Except at index 1 when ARGV[5]
/// is 1 and nobody holds it: a place whose holder died expired there
/// unwritten, below the first position not known to be taken, and no
/// search would hand it out again (every commit waited for it until one
/// gave up after 10 s; in a kill storm the log stood still). The caller
/// sends the keys of the part of the window where the search is likely to
/// begin and end (sending all 128 cost the server twice as much as the
/// search): a search that would begin before them, or find every one of
/// them another's short of the window's end, changes nothing and answers
/// -1 with the position where it would go on; the caller sends the keys
/// from there, then the whole window. Returns {index of the place, 0 or
/// -1; stamp (not read with -1); the first position not known to be
/// taken}.
pub(super) const TAKE_PLACE: &str = r#"
local me, ttl, held, base = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local lo, full = tonumber(ARGV[6]), tonumber(ARGV[7])
local hi = lo + #KEYS - 4
local got, freed = 0, 0
local free_key = KEYS[#KEYS - 1]
local free = tonumber(redis.call('GET', free_key) or '0')
local start = 1
if free - base > 1 then
  start = free - base
  if ARGV[5] == '1' and not redis.call('GET', KEYS[#KEYS - 2]) then start = 1 end
end
if held > 0 and held < start then start = held end
if start < lo then return {-1, 0, base + start} end
for i = start, hi do
  if got ~= 0 and i > held then break end
  local key = KEYS[i - lo + 1]
  local cur = redis.call('GET', key)
  if got == 0 and (not cur or cur == me) then
    redis.call('SET', key, me, 'PX', ttl)
    got = i
  elseif got ~= 0 and cur == me then
    redis.call('DEL', key)
    freed = i
  end
end
if got == 0 and hi < full then return {-1, 0, base + hi + 1} end
-- Every position before the one found is taken when the search began at
-- or before the first not known to be taken.
local known = free
if ARGV[5] == '1' and base + 1 > known then known = base + 1 end
local new_free = free
if got ~= 0 and base + got + 1 > free and base + start <= known then
  new_free = base + got + 1
end
if freed ~= 0 and base + freed < new_free then new_free = base + freed end
if new_free ~= free then redis.call('SET', free_key, new_free, 'PX', ttl * 30) end
return {got, tonumber(redis.call('GET', KEYS[#KEYS]) or '-1'), new_free}
"#;

/// Frees the log position KEYS[1], ARGV[2], if ARGV[1] holds it, and
/// lowers the first position not known to be taken (KEYS[2]) to it.
pub(super) const LEAVE_PLACE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  local free = tonumber(redis.call('GET', KEYS[2]) or '0')
  if tonumber(ARGV[2]) < free then redis.call('SET', KEYS[2], ARGV[2], 'KEEPTTL') end
end
return 1
"#;
