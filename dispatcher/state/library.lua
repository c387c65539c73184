#!lua name=dispatcher
--
-- Shared state of the call-group dispatcher: the only code that writes the tenant's keys.
-- Python calls it through dispatcher.state.store.StateStore; key names: dispatcher/state/keys.py.
--
-- KEYS common to every function (KEYS[1..22], one tenant, hash tag {t:<tenant>}):
--   1 {t:T}:config   2 {t:T}:events   3 {t:T}:resv   4 {t:T}:live
--   5..14 agent columns {t:T}:a:<column>, column = status reason live resv max wrapup
--         wrapuntil idle missed autopause
--   15..20 the queues: {t:T}:q (zset of every group's waiting callers, member <gid>\31<call>,
--         score by priority then arrival), :qe (hash call -> entry), :qlease (zset call ->
--         lease deadline), :qn (hash gid -> callers waiting), :qcfg (hash gid -> the queue's
--         max length and members, written by disp_config_put), :ht (hash gid -> the group's
--         recent handle times)
--   21 {t:T}:lnode (hash call -> the node that holds the answered call: when a node's
--         heartbeat lapses the others release its calls)
--   22 {t:T}:counts (hash: every event counted as it is appended, `emit`; the admin API's
--         Prometheus counters, the same for every API process)
-- Passing the same prefix to every function keeps the Python side a constant tuple and lets
-- each function reach the events stream (and its MAXLEN in config) and the queues without a
-- second call. A function's own keys follow from KEYS[23].
--
-- Error replies start with a code: BADARG (malformed KEYS/ARGV, a caller bug), CONFLICT,
-- NOAGENT, NOGROUP, NOQUEUE, STATE, TAKEN, BUSY. Errors are raised before the first write: a FUNCTION is not rolled back.
--
-- Time is Redis' TIME in ms, one clock for every node. A reservation is valid while
-- now < deadline; the zset {t:T}:resv is its source of truth and the resv column counts its
-- entries per agent. Reservation member and live field: <call>\31<agent>. Live value:
-- <gid>\31<start_ms>. Invariant: live + resv <= max per agent (counters never below 0).

local K_CONFIG, K_EVENTS, K_RESV, K_LIVE = 1, 2, 3, 4
local C_STATUS, C_REASON, C_LIVE, C_RESV, C_MAX = 5, 6, 7, 8, 9
local C_WRAPUP, C_WRAPUNTIL, C_IDLE, C_MISSED, C_AUTOPAUSE = 10, 11, 12, 13, 14
local K_Q, K_QE, K_QLEASE, K_QN, K_QCFG, K_HT = 15, 16, 17, 18, 19, 20
-- the node holding each answered call ({t:T}:lnode, call -> node): a dead node's calls are
-- found and released by the others
local K_LNODE = 21
-- what every API process reports the same: counts of events by kind ({t:T}:counts)
local K_COUNTS = 22
local NBASE = 22

local SEP = '\031'
local AVAILABLE, PAUSED, LOGGED_OUT = 0, 1, 2
local DEFAULT_EVENTS_MAXLEN = '1000000'
-- Claims and snapshots sweep a bounded batch so a backlog never makes one call slow (texts:
-- they are passed to redis.call as LIMIT counts).
local SWEEP_BATCH = '64'
-- Safety expiry of a call's offered set if its release never comes (router crash);
-- refreshed on answer so it outlives any normal call (a text: see ONE below).
local CALL_TTL_S = '86400'
-- unpack() pushes every element on the Lua stack (about 8000 slots): chunk big lists.
local CHUNK = 1000
local MISS_REASONS = {busy = true, noanswer = true, declined = true, error = true}
-- Failures that are not the agent's doing and so never count towards auto-pause.
local NO_MISS_REASONS = {cancelled = true, unreachable = true}
-- How a whole call ended (disp_release), for reports.
local OUTCOMES = {answered = true, abandoned = true, no_answer = true, failed = true,
                  expired = true, lost = true}
-- How disp_claim chooses among candidate waves.
local PICKS = {first = true, busy = true, idle = true}
-- Why a caller left a queue (event dequeued): answered, hung up, waited max_wait, nobody
-- logged in any more, its node's lease lapsed, or its node gave up on it (media failure).
local LEAVE_REASONS = {answered = true, abandoned = true, timeout = true, no_agents = true,
                       lost = true, error = true}
-- A queue entry's states: waiting; notified (its node was told an agent is free for it and
-- has this long to claim one, else it waits again); ringing (its node claimed agents).
local NOTIFY_MS = 2000
-- How long a caller back from a ring round waits before it is notified again (see entries).
local REJOIN_MS, REJOIN_MAX_MS = 250, 8000
local QUEUE_SWEEP_BATCH = '16'
-- Handle times kept per group for the wait estimate (the newest first).
local HANDLE_TIMES = 100
-- Priorities 0..9 and an arrival time in ms (< 1e13 until the year 2286) share one exact
-- double: higher priorities sort first, then earlier arrivals.
local PRIORITY_SPAN = 1e13

local function raise(code, message)
  error({err = code .. ' ' .. message})
end

-- Redis 7.0 formats every number passed to redis.call with snprintf('%.17g') and Lua's
-- tonumber() parses with strtod: together about a tenth of a claim's instructions. So the
-- hot paths pass the texts below, and parse the counters they read through num().
local ONE, MINUS_ONE = '1', '-1'

-- Parsed numbers by text. The texts read per claim repeat (counters '0', '1'; an agent's
-- idle and wrap-up times until its next call), and Lua interns strings, so a lookup is a
-- pointer hash. Emptied when it holds NUM_CACHE_MAX texts (about 1 MB).
local NUM_CACHE_MAX = 10000
local num_cache, num_cache_n = {}, 0

local function num(text)
  if not text then
    return nil
  end
  local n = num_cache[text]
  if n == nil then
    n = tonumber(text)
    if n == nil then
      return nil
    end
    if num_cache_n >= NUM_CACHE_MAX then
      num_cache, num_cache_n = {}, 0
    end
    num_cache[text], num_cache_n = n, num_cache_n + 1
  end
  return n
end

-- Redis' TIME in ms, as a number and as its decimal text (built from TIME's own texts, so
-- no number is formatted).
local function now_ms()
  local t = redis.call('TIME')
  local us = t[2]
  local ms_text = t[1] .. string.sub(string.rep('0', 6 - #us) .. us, 1, 3)
  return tonumber(ms_text), ms_text
end

local function open(keys, extra)
  if #keys < NBASE + extra then
    raise('BADARG', 'expected at least ' .. (NBASE + extra) .. ' keys, got ' .. #keys)
  end
  local now, now_text = now_ms()
  return {keys = keys, now = now, now_text = now_text, maxlen = nil}
end

local function need_int(value, name, min)
  local n = tonumber(value)
  if n == nil or n ~= math.floor(n) or n < min then
    raise('BADARG', name .. ' must be an integer >= ' .. min .. ', got ' .. tostring(value))
  end
  return n
end

local function need_text(value, name)
  if value == nil or value == '' then
    raise('BADARG', name .. ' must not be empty')
  end
  return value
end

-- A count kept as the decimal text it came as: tonumber() turns a big int64 (an
-- events_maxlen near 2^63) into a float that Redis then refuses as MAXLEN, after the writes.
local function need_count_text(value, name)
  local text = tostring(value or '')
  if not string.match(text, '^[1-9][0-9]*$') or #text > 19
      or (#text == 19 and text > '9223372036854775807') then
    raise('BADARG', name .. ' must be an integer between 1 and 2^63-1, got ' .. text)
  end
  return text
end

-- The optional audit argument of the functions that change config or state: a JSON object
-- with string fields actor, action, object and detail (all optional). Decoded before the
-- first write, so a malformed one changes nothing. nil when absent or ''.
local AUDIT_FIELDS = {'actor', 'action', 'object', 'detail'}
local STATUS_NAMES = {'available', 'paused', 'logged out'}

local function need_audit(text)
  if text == nil or text == '' then
    return nil
  end
  local ok, decoded = pcall(cjson.decode, text)
  if not ok or type(decoded) ~= 'table' or decoded[1] ~= nil then
    raise('BADARG', 'audit must be a JSON object')
  end
  local audit = {}
  for _, name in ipairs(AUDIT_FIELDS) do
    local value = decoded[name]
    if value ~= nil and type(value) ~= 'string' then
      raise('BADARG', 'audit field ' .. name .. ' must be a string')
    end
    audit[name] = value
  end
  return audit
end

local function split_csv(text)
  local out = {}
  if text and text ~= '' then
    for item in string.gmatch(text, '[^,]+') do
      out[#out + 1] = item
    end
  end
  return out
end

local function split_slot(member)
  local i = string.find(member, SEP, 1, true)
  return string.sub(member, 1, i - 1), string.sub(member, i + 1)
end

local function hmget(key, fields)
  if #fields == 0 then
    return {}
  elseif #fields <= CHUNK then
    return redis.call('HMGET', key, unpack(fields))
  end
  local out = {}
  for i = 1, #fields, CHUNK do
    local part = redis.call('HMGET', key, unpack(fields, i, math.min(i + CHUNK - 1, #fields)))
    for j = 1, #part do
      out[#out + 1] = part[j]
    end
  end
  return out
end

local function config_version(ctx)
  return num(redis.call('HGET', ctx.keys[K_CONFIG], 'version')) or 0
end

local function configured(ctx, agent)
  return redis.call('HEXISTS', ctx.keys[C_MAX], agent) == 1
end

local function nonempty(value)
  return (value ~= nil and value ~= '') and value or 'unknown'
end

-- The value of field `name` among an event's n name, value arguments (nil when absent).
local function field_of(extra, n, name)
  for i = 1, n, 2 do
    if extra[i] == name then
      return extra[i + 1]
    end
  end
  return nil
end

-- Appends one event; empty values are left out. Arguments after kind: name, value, ...
-- The counters the admin API exports ({t:T}:counts), kept here so every API process reports
-- the same numbers: events|<kind>, calls|<outcome> (ended), offers|<reason> (failed;
-- answered and expired as their own), abandoned|<group> (left a queue by hanging up),
-- overflows|<group>|<reason> (refused at join, or left on timeout / no agents),
-- voicemails|<group>.
local function count_event(ctx, kind, extra, n)
  local key = ctx.keys[K_COUNTS]
  redis.call('HINCRBY', key, 'events|' .. kind, ONE)
  if kind == 'ended' then
    redis.call('HINCRBY', key, 'calls|' .. nonempty(field_of(extra, n, 'outcome')), ONE)
  elseif kind == 'failed' then
    redis.call('HINCRBY', key, 'offers|' .. nonempty(field_of(extra, n, 'reason')), ONE)
  elseif kind == 'answered' or kind == 'expired' then
    redis.call('HINCRBY', key, 'offers|' .. kind, ONE)
  elseif kind == 'dequeued' or kind == 'overflowed' then
    local reason = field_of(extra, n, 'reason')
    if kind == 'dequeued' and reason == 'abandoned' then
      redis.call('HINCRBY', key, 'abandoned|' .. nonempty(field_of(extra, n, 'group')), ONE)
    elseif kind == 'overflowed' or reason == 'timeout' or reason == 'no_agents' then
      redis.call('HINCRBY', key, 'overflows|' .. nonempty(field_of(extra, n, 'group')) .. '|'
        .. nonempty(reason), ONE)
    end
  elseif kind == 'voicemail' then
    redis.call('HINCRBY', key, 'voicemails|' .. nonempty(field_of(extra, n, 'group')), ONE)
  end
end

local function emit(ctx, kind, ...)
  if ctx.maxlen == nil then
    ctx.maxlen = redis.call('HGET', ctx.keys[K_CONFIG], 'events_maxlen') or DEFAULT_EVENTS_MAXLEN
  end
  local n = select('#', ...)
  local extra = {...}
  -- Explicit indexes: `#fields + 1` costs a length search per element.
  local fields, m = {'type', kind, 'ts', ctx.now_text}, 4
  for i = 1, n, 2 do
    local value = extra[i + 1]
    if value ~= nil and value ~= '' then
      fields[m + 1], fields[m + 2] = extra[i], value
      m = m + 2
    end
  end
  redis.call('XADD', ctx.keys[K_EVENTS], 'MAXLEN', '~', ctx.maxlen, '*', unpack(fields, 1, m))
  count_event(ctx, kind, extra, n)
end

-- Appends an audit event (who changed what) when the caller passed one; extra name, value
-- pairs follow the audit fields.
local function emit_audit(ctx, audit, ...)
  if audit then
    emit(ctx, 'audit', 'actor', audit.actor, 'action', audit.action, 'object', audit.object,
         'detail', audit.detail, ...)
  end
end

-- The tenant's own key named by suffix, checked: a function that takes a key beyond the
-- common ones refuses any other tenant's.
local function own_key(ctx, key, suffix)
  if key ~= string.sub(ctx.keys[K_CONFIG], 1, -8) .. ':' .. suffix then
    raise('BADARG', 'key ' .. tostring(key) .. ' is not the ' .. suffix .. ' key of this tenant')
  end
  return key
end

-- An agent removed from the config keeps its live/resv counters until they drain; the last
-- decrement deletes the field so nothing of the agent is left behind. Returns whether the
-- agent is configured when that was asked (the last decrement), else nil.
local function counter_down(ctx, column, agent)
  local key = ctx.keys[column]
  local value = num(redis.call('HGET', key, agent)) or 0
  local known = nil
  if value <= 1 then
    known = configured(ctx, agent)
  end
  if known == false then
    redis.call('HDEL', key, agent)
  elseif value > 0 then
    redis.call('HINCRBY', key, agent, MINUS_ONE)
  end
  return known
end

local doorbells_for

local function sweep(ctx, limit)
  local k = ctx.keys
  local due = redis.call('ZRANGEBYSCORE', k[K_RESV], '-inf', ctx.now_text, 'LIMIT', '0', limit)
  local freed = {}
  for _, member in ipairs(due) do
    redis.call('ZREM', k[K_RESV], member)
    local call, agent = split_slot(member)
    counter_down(ctx, C_RESV, agent)
    emit(ctx, 'expired', 'call', call, 'agent', agent)
    freed[agent] = true
  end
  if #due > 0 then
    doorbells_for(ctx, freed)
  end
  return #due
end

-- A group's members parsed (list and index), by group key, for as long as the members string
-- in Redis is the same: a claim then does not split and index them again (about 8 us of its
-- ~130 with 20 members). Lua interns strings, so the check is a pointer comparison. Only a
-- cache of what the key holds: every call reads the key; it is emptied whenever it holds
-- GROUP_CACHE_MAX groups (their parsed form is then rebuilt on use).
local GROUP_CACHE_MAX = 10000
local group_cache, group_cache_n = {}, 0

local function read_group(ctx, key, gid)
  local prefix = string.sub(ctx.keys[K_CONFIG], 1, -8)
  if key ~= prefix .. ':g:' .. gid then
    raise('BADARG', 'group key ' .. tostring(key) .. ' does not belong to group ' .. gid)
  end
  local g = redis.call('HMGET', key, 'members', 'rr')
  if not g[1] then
    raise('NOGROUP', 'group ' .. gid .. ' is not configured')
  end
  local cached = group_cache[key]
  if cached == nil or cached.raw ~= g[1] then
    local members = split_csv(g[1])
    local index = {}
    for i, agent in ipairs(members) do
      index[agent] = i
    end
    if cached == nil then
      if group_cache_n >= GROUP_CACHE_MAX then
        group_cache, group_cache_n = {}, 0
      end
      group_cache_n = group_cache_n + 1
    end
    cached = {raw = g[1], members = members, index = index}
    group_cache[key] = cached
  end
  return cached.members, cached.index, num(g[2]) or -1
end

-- Per member (canonical order): status, busy = live + resv, max, wrapuntil, idle.
local function read_members(ctx, members)
  local k = ctx.keys
  local status, live = hmget(k[C_STATUS], members), hmget(k[C_LIVE], members)
  local resv, max = hmget(k[C_RESV], members), hmget(k[C_MAX], members)
  local wrapuntil, idle = hmget(k[C_WRAPUNTIL], members), hmget(k[C_IDLE], members)
  local s = {n = #members, status = {}, busy = {}, max = {}, wrapuntil = {}, idle = {}}
  for i = 1, #members do
    s.status[i] = num(status[i]) or LOGGED_OUT
    s.busy[i] = (num(live[i]) or 0) + (num(resv[i]) or 0)
    s.max[i] = num(max[i]) or 0
    s.wrapuntil[i] = num(wrapuntil[i]) or 0
    s.idle[i] = num(idle[i]) or 0
  end
  return s
end

local function eligible(s, i, now)
  return s.status[i] == AVAILABLE and now >= s.wrapuntil[i] and s.busy[i] < s.max[i]
end

local function flat_rows(s)
  -- Explicit indexes: `#rows + 1` costs a length search per element.
  local rows, j = {}, 0
  for i = 1, s.n do
    rows[j + 1], rows[j + 2], rows[j + 3] = s.status[i], s.busy[i], s.max[i]
    rows[j + 4], rows[j + 5] = s.wrapuntil[i], s.idle[i]
    j = j + 5
  end
  return rows
end

-- Removes the call's reservation of the agent and counts it down; true if there was one.
local function drop_reservation(ctx, call, agent)
  if redis.call('ZREM', ctx.keys[K_RESV], call .. SEP .. agent) == 0 then
    return false
  end
  counter_down(ctx, C_RESV, agent)
  return true
end

-- Returns the set of agents whose reservation was dropped, and whether there was any.
local function release_reservations(ctx, call_key, call, keep_agent, reason)
  local freed, any = {}, false
  for _, agent in ipairs(redis.call('SMEMBERS', call_key)) do
    if agent ~= keep_agent and drop_reservation(ctx, call, agent) then
      emit(ctx, 'released', 'call', call, 'agent', agent, 'reason', reason)
      freed[agent], any = true, true
    end
  end
  return freed, any
end

local function check_call_key(ctx, key, call)
  local prefix = string.sub(ctx.keys[K_CONFIG], 1, -8)
  if key ~= prefix .. ':call:' .. call then
    raise('BADARG', 'call key ' .. tostring(key) .. ' does not belong to call ' .. call)
  end
end

local function check_end_key(ctx, key, call)
  if key ~= string.sub(ctx.keys[K_CONFIG], 1, -8) .. ':ended:' .. call then
    raise('BADARG', 'end marker key ' .. tostring(key) .. ' does not belong to call ' .. call)
  end
end

local function check_sticky_key(ctx, key, gid)
  local head = string.sub(ctx.keys[K_CONFIG], 1, -8) .. ':sticky:' .. gid .. ':'
  if key and string.sub(key, 1, #head) ~= head then
    raise('BADARG', 'sticky key ' .. key .. ' does not belong to group ' .. gid)
  end
end

-- The sticky hash of the caller's local day and that day's end (ms), or nil.
-- Which clock the sticky day follows: Redis' TIME (ctx.now), the one clock every node shares.
-- The worker cannot know it before the call, so it passes the hashes of three consecutive
-- local days of the group's zone around its own clock (KEYS[first..first+2]) and their
-- bounds 'start,end1,end2,end3' in ms (day i holds [bound i, bound i+1)); this picks the day
-- that holds now. A worker whose clock is off by less than a day so reads and writes the
-- same day as every node and never shortens or lengthens it; with a clock off by more no day
-- holds now and the call has no sticky memory (the worker sees the skew in the claim's now).
-- bounds '' means no sticky memory (no caller, or sticky off). Raises BADARG for malformed
-- bounds or a key of another group, before anything is written.
local function sticky_of_now(ctx, first, bounds, gid)
  if bounds == nil or bounds == '' then
    return nil
  end
  local edges = split_csv(bounds)
  if #edges ~= 4 then
    raise('BADARG', 'sticky bounds must be 4 comma-separated ms, got ' .. bounds)
  end
  for i = 1, 4 do
    edges[i] = need_int(edges[i], 'sticky bound', 0)
    if i > 1 and edges[i] <= edges[i - 1] then
      raise('BADARG', 'sticky bounds must increase, got ' .. bounds)
    end
  end
  for i = 0, 2 do
    local key = ctx.keys[first + i]
    if key == nil then
      raise('BADARG', 'expected 3 sticky keys from KEYS[' .. first .. ']')
    end
    check_sticky_key(ctx, key, gid)
  end
  for i = 1, 3 do
    if ctx.now >= edges[i] and ctx.now < edges[i + 1] then
      return ctx.keys[first + i - 1], edges[i + 1]
    end
  end
  return nil
end

-- -- queues ----------------------------------------------------------------------------------
-- An entry ({t:T}:qe, call -> record) is gid, caller, priority, joined ms, node, state,
-- until ms (notified: the end of the notification; waiting: not notified before then),
-- rounds (ring rounds it came back from), joined by \31. Its node holds the caller's INVITE
-- and renews the lease ({t:T}:qlease) while it does; an entry whose lease lapsed (its node
-- died) is swept by the next queue-aware call, so it never blocks the queue.
--
-- A caller back from a ring round (nobody answered, or nobody its node could reach: an
-- agent free in Redis whose phone is not registered at that node yet) waits REJOIN_MS *
-- 2^(rounds - 1), at most REJOIN_MAX_MS, before it is notified again: each round costs its
-- node a branch of the caller's INVITE transaction (Kamailio allows 12), so a doorbell that
-- rang at once and every keep would spend them all in a few seconds.

local function entry_of(ctx, call)
  local raw = redis.call('HGET', ctx.keys[K_QE], call)
  if not raw then
    return nil
  end
  local f = {}
  for part in string.gmatch(raw .. SEP, '([^' .. SEP .. ']*)' .. SEP) do
    f[#f + 1] = part
  end
  return {gid = f[1], caller = f[2], priority = tonumber(f[3]), joined = tonumber(f[4]),
          node = f[5], state = f[6], ['until'] = tonumber(f[7]) or 0,
          rounds = tonumber(f[8]) or 0}
end

local function entry_put(ctx, call, e)
  redis.call('HSET', ctx.keys[K_QE], call, table.concat({e.gid, e.caller, e.priority, e.joined,
             e.node, e.state, e['until'], e.rounds}, SEP))
end

local function tenant_of(ctx)
  return string.sub(ctx.keys[K_CONFIG], 4, -9)
end

-- The queue config of group gid: its max length and members, or nil when it has no queue.
local function queue_config(ctx, gid)
  local raw = redis.call('HGET', ctx.keys[K_QCFG], gid)
  if not raw then
    return nil
  end
  local i = string.find(raw, SEP, 1, true)
  return tonumber(string.sub(raw, 1, i - 1)), split_csv(string.sub(raw, i + 1))
end

local function queue_remove(ctx, call, e, reason)
  local k = ctx.keys
  redis.call('ZREM', k[K_Q], e.gid .. SEP .. call)
  redis.call('HDEL', k[K_QE], call)
  redis.call('ZREM', k[K_QLEASE], call)
  if redis.call('HINCRBY', k[K_QN], e.gid, -1) <= 0 then
    redis.call('HDEL', k[K_QN], e.gid)
  end
  emit(ctx, 'dequeued', 'call', call, 'group', e.gid, 'caller', e.caller, 'reason', reason,
       'wait_ms', ctx.now - e.joined)
end

local function sweep_queue(ctx, limit)
  local due = redis.call('ZRANGEBYSCORE', ctx.keys[K_QLEASE], '-inf', ctx.now_text, 'LIMIT',
                         '0', limit)
  for _, call in ipairs(due) do
    local e = entry_of(ctx, call)
    if e then
      queue_remove(ctx, call, e, 'lost')
    else
      redis.call('ZREM', ctx.keys[K_QLEASE], call)
    end
  end
end

-- The calls waiting in group gid, in queue order. O(callers waiting in the tenant).
local function queue_calls(ctx, gid)
  local head, out = gid .. SEP, {}
  for _, member in ipairs(redis.call('ZRANGE', ctx.keys[K_Q], 0, -1)) do
    if string.sub(member, 1, #head) == head then
      out[#out + 1] = string.sub(member, #head + 1)
    end
  end
  return out
end

local function position_of(ctx, gid, call)
  for i, c in ipairs(queue_calls(ctx, gid)) do
    if c == call then
      return i
    end
  end
  return 0
end

-- Tells the nodes of the first waiting entries of gid that an agent is free for them: one
-- entry per eligible member not yet promised to a notified entry. The node claims the agent
-- by the group's rules (its Decider), so the strategy and sticky memory decide who rings.
-- PUBLISH reaches the node's keeper at once; a missed one is found by the keeper's next
-- disp_queue_keep, which reports each held entry's state.
local function ring_doorbells(ctx, gid, members)
  if (tonumber(redis.call('HGET', ctx.keys[K_QN], gid)) or 0) == 0 then
    return 0
  end
  local s = read_members(ctx, members)
  local free = 0
  for i = 1, s.n do
    if eligible(s, i, ctx.now) then
      free = free + 1
    end
  end
  local rung = 0
  for _, call in ipairs(queue_calls(ctx, gid)) do
    if free <= 0 then
      break
    end
    local e = entry_of(ctx, call)
    if e and e.state == 'notified' and e['until'] > ctx.now then
      free = free - 1
    elseif e and e.state == 'waiting' and e['until'] > ctx.now then
      -- back from a ring round, not yet due again: the next caller may take the agent
    elseif e and e.state ~= 'ringing' then
      e.state, e['until'] = 'notified', ctx.now + NOTIFY_MS
      entry_put(ctx, call, e)
      redis.call('PUBLISH', 'dispatcher:node:' .. e.node, tenant_of(ctx) .. SEP .. call)
      free = free - 1
      rung = rung + 1
    end
  end
  return rung
end

-- Rings the doorbells of every queued group with one of `agents` (a set; nil: every group)
-- among its members. A tenant without queues pays one HGETALL of an empty hash.
-- (Declared before sweep, which frees agents too.)
function doorbells_for(ctx, agents)
  local qcfg = redis.call('HGETALL', ctx.keys[K_QCFG])
  for i = 1, #qcfg, 2 do
    local gid = qcfg[i]
    local _, members = queue_config(ctx, gid)
    local concerned = agents == nil
    for _, agent in ipairs(members) do
      concerned = concerned or agents[agent] ~= nil
    end
    if concerned then
      ring_doorbells(ctx, gid, members)
    end
  end
end

-- Appends a handle time (ms) to the group's recent ones, when the group has a queue.
local function record_handle_time(ctx, gid, ms)
  if redis.call('HEXISTS', ctx.keys[K_QCFG], gid) == 0 then
    return
  end
  local old = redis.call('HGET', ctx.keys[K_HT], gid)
  local times = {ms}
  for _, t in ipairs(split_csv(old)) do
    if #times >= HANDLE_TIMES then
      break
    end
    times[#times + 1] = t
  end
  redis.call('HSET', ctx.keys[K_HT], gid, table.concat(times, ','))
end

-- disp_config_put: atomically replaces the tenant's config.
-- KEYS: 1..22 common; 23..22+G the keys of the G new groups, in the order of their ARGV
--       records; after them the keys of the current groups the new config drops (deleted).
-- ARGV: 1 expected_version, 2 doc_json (opaque), 3 events_maxlen, 4 A (agent count),
--       5 G (group count), then A records of 6: agent_id, max_calls, wrapup_s,
--       auto_pause_after, status, reason; then G records of 3: group_id, members (comma list,
--       canonical order), queue max length (0: the group has no queue); then optionally 1 audit JSON ({actor, action, object, detail},
--       strings), appended as an audit event with the new version after config_changed.
--       max/wrapup/autopause are written for every agent; status/reason only for agents new
--       to Redis (the others keep their live state). {t:T}:qcfg gets each queued group's max
--       length and members (groups without a queue lose theirs, and their handle times);
--       every queued group's doorbells ring after the put. Agents that are gone lose their columns,
--       except live/resv counters that are not zero yet (they drain on release). A group's rr
--       follows the agent it pointed at (-1 if that agent left the group).
-- Returns: the new version (integer).
-- Errors: CONFLICT when version != expected_version; BADARG for malformed records, duplicate
--         or unknown ids, a group key that does not match, a dropped group whose key is missing,
--         an events_maxlen that is not an int64 >= 1, a malformed audit JSON.
local function config_put(keys, args)
  local ctx = open(keys, 0)
  local expected = need_int(args[1], 'expected_version', 0)
  local doc = args[2] or ''
  local maxlen = need_count_text(args[3], 'events_maxlen')
  local na = need_int(args[4], 'agent count', 0)
  local ng = need_int(args[5], 'group count', 0)
  local nargs = 5 + 6 * na + 3 * ng
  if #args ~= nargs and #args ~= nargs + 1 then
    raise('BADARG', 'expected ' .. nargs .. ' arguments (+1 audit), got ' .. #args)
  end
  local audit = need_audit(args[nargs + 1])
  if #keys < NBASE + ng then
    raise('BADARG', 'expected ' .. ng .. ' group keys after the common keys')
  end
  local k = keys
  local current = config_version(ctx)
  if current ~= expected then
    raise('CONFLICT', 'config version is ' .. current .. ', expected ' .. expected)
  end

  local agents, by_id = {}, {}
  for i = 0, na - 1 do
    local o = 6 + 6 * i
    local id = need_text(args[o], 'agent id')
    if by_id[id] then
      raise('BADARG', 'duplicate agent ' .. id)
    end
    local agent = {
      id = id,
      max = need_int(args[o + 1], 'max_calls of ' .. id, 0),
      wrapup = need_int(args[o + 2], 'wrapup_s of ' .. id, 0),
      autopause = need_int(args[o + 3], 'auto_pause_after of ' .. id, 0),
      status = need_int(args[o + 4], 'status of ' .. id, 0),
      reason = args[o + 5],
    }
    if agent.status > LOGGED_OUT then
      raise('BADARG', 'status of ' .. id .. ' must be 0, 1 or 2')
    end
    agents[#agents + 1] = agent
    by_id[id] = agent
  end

  local prefix = string.sub(k[K_CONFIG], 1, -8)
  local groups, by_gid = {}, {}
  for j = 0, ng - 1 do
    local o = 6 + 6 * na + 3 * j
    local gid = need_text(args[o], 'group id')
    local key = k[NBASE + 1 + j]
    if by_gid[gid] then
      raise('BADARG', 'duplicate group ' .. gid)
    end
    if key ~= prefix .. ':g:' .. gid then
      raise('BADARG', 'key ' .. key .. ' does not belong to group ' .. gid)
    end
    local members, seen = split_csv(args[o + 1]), {}
    for _, agent in ipairs(members) do
      if not by_id[agent] or seen[agent] then
        raise('BADARG', 'group ' .. gid .. ': member ' .. agent .. ' unknown or repeated')
      end
      seen[agent] = true
    end
    local queue_max = need_int(args[o + 2], 'queue max length of ' .. gid, 0)
    groups[#groups + 1] = {id = gid, key = key, csv = args[o + 1], members = members,
                           queue_max = queue_max}
    by_gid[gid] = true
  end

  local passed = {}
  for i = NBASE + 1, #keys do
    passed[keys[i]] = true
  end
  local dropped = {}
  for _, gid in ipairs(split_csv(redis.call('HGET', k[K_CONFIG], 'groups'))) do
    if not by_gid[gid] then
      local key = prefix .. ':g:' .. gid
      if not passed[key] then
        raise('BADARG', 'key of dropped group ' .. gid .. ' not passed')
      end
      dropped[#dropped + 1] = key
    end
  end

  for _, a in ipairs(agents) do
    redis.call('HSET', k[C_MAX], a.id, a.max)
    redis.call('HSET', k[C_WRAPUP], a.id, a.wrapup)
    redis.call('HSET', k[C_AUTOPAUSE], a.id, a.autopause)
    if redis.call('HSETNX', k[C_STATUS], a.id, a.status) == 1 then
      redis.call('HSET', k[C_REASON], a.id, a.reason or '')
    end
  end
  for _, id in ipairs(redis.call('HKEYS', k[C_MAX])) do
    if not by_id[id] then
      for _, column in ipairs({C_STATUS, C_REASON, C_MAX, C_WRAPUP, C_WRAPUNTIL, C_IDLE,
                               C_MISSED, C_AUTOPAUSE}) do
        redis.call('HDEL', k[column], id)
      end
      for _, column in ipairs({C_LIVE, C_RESV}) do
        if (tonumber(redis.call('HGET', k[column], id)) or 0) <= 0 then
          redis.call('HDEL', k[column], id)
        end
      end
    end
  end

  local gids = {}
  for _, g in ipairs(groups) do
    local old = redis.call('HMGET', g.key, 'members', 'rr')
    local rr = -1
    local old_rr = tonumber(old[2]) or -1
    if old_rr >= 0 then
      local pointed = split_csv(old[1])[old_rr + 1]
      for i, agent in ipairs(g.members) do
        if agent == pointed then
          rr = i - 1
        end
      end
    end
    redis.call('HSET', g.key, 'members', g.csv, 'rr', rr)
    if g.queue_max > 0 then
      redis.call('HSET', k[K_QCFG], g.id, g.queue_max .. SEP .. g.csv)
    else
      redis.call('HDEL', k[K_QCFG], g.id)
    end
    gids[#gids + 1] = g.id
  end
  for _, gid in ipairs(redis.call('HKEYS', k[K_QCFG])) do
    if not by_gid[gid] then
      redis.call('HDEL', k[K_QCFG], gid)
      redis.call('HDEL', k[K_HT], gid)
    end
  end
  for _, key in ipairs(dropped) do
    redis.call('DEL', key)
  end

  local version = current + 1
  redis.call('HSET', k[K_CONFIG], 'version', version, 'doc', doc,
             'groups', table.concat(gids, ','), 'events_maxlen', maxlen)
  ctx.maxlen = maxlen
  emit(ctx, 'config_changed', 'version', version)
  emit_audit(ctx, audit, 'version', version)
  -- New members or limits may free an agent for someone waiting.
  doorbells_for(ctx, nil)
  return version
end

-- disp_claim: reserves agents of one group for one call (one wave), returning fresh state.
-- KEYS: 1..22 common; 23 group {t:T}:g:<gid>; 24 call set {t:T}:call:<call>;
--       25..27 (with sticky bounds) the sticky hashes {t:T}:sticky:<gid>:<yyyymmdd> of three
--       consecutive local days of the group's zone (sticky_of_now).
-- ARGV: 1 call, 2 gid, 3 caller ('' = no sticky), 4 reservation_ttl_ms, 5 arrival (1 when
--       the call arrives at this group with this claim: event arrived, for reports; else 0),
--       6 pick: which candidate wave is taken - 'first' the first with an eligible agent
--       (the worker's order stands); 'busy' / 'idle' the one whose first eligible agent is
--       the least busy (live + resv, then idle since the longest) / idle the longest, on the
--       current counts, earlier waves winning ties: the core's least_busy / longest_idle
--       pick, made here so a worker's stale counts cost no second claim,
--       7 sticky bounds of KEYS 25..27 ('' = no sticky memory; see sticky_of_now),
--       8 W (withdraw count), 9..8+W agents to withdraw, then the wave agent ids,
--       optionally followed by further candidate waves, each after an empty-string separator.
--       First sweeps up to 64 expired reservations, then withdraws: this call's reservations
--       of the W agents are released (event released, reason replanned) and the agents are
--       no longer counted as offered on the call — the worker planned on a stale snapshot and
--       corrects its choice (an agent live on the call stays offered on it). On the call's
--       first claim, the caller's sticky agent of the day Redis' TIME falls in, if a member
--       and eligible, is claimed alone (the waves are ignored). Otherwise, in the first candidate wave that has any, each
--       agent that is a member, not yet offered on this call and eligible (status 0,
--       now >= wrapuntil, live + resv < max) gets a reservation until now + ttl (with pick
--       busy/idle: in the wave that pick chooses). Further
--       candidate waves let a worker whose snapshot is stale still get the pick its plan
--       would make on the current state, in the same round trip.
--       rr becomes the canonical index of the last agent claimed (rr_prev keeps the value
--       it replaced, so a withdrawal of that agent puts the cursor back).
-- Returns: {version, now_ms, rr, sticky_agent or '', is_sticky 0/1, {claimed agent ids},
--           {status, busy, max, wrapuntil, idle per member in canonical order}, queue_ahead}
--           queue_ahead 1: the group has a queue with callers waiting and this call is not
--           one of them, so nothing was claimed (it queues behind them); else 0. A queued
--           call (one with an entry) claims as any call, and its entry turns 'ringing'.
--           rr and rows are the state after the sweep and the withdrawals but BEFORE this
--           claim's reservations: the worker re-plans on exactly what the claim decided on,
--           which shows whether its wave was the right one (busy = live + resv, all groups).
--           With pick busy/idle rows is empty: the claim made the strategy's pick itself on
--           these counts, so the worker has nothing to re-plan (it asks only whether the
--           agent it got has a phone), and 5 values per member need not travel.
-- Errors: NOGROUP when the group is not configured; BADARG for an empty call or gid, a bad
--         ttl, arrival flag, pick, sticky bounds or withdraw count, or a key that does not
--         match call/gid.
local function claim(keys, args)
  local ctx = open(keys, 2)
  local call = need_text(args[1], 'call')
  local gid = need_text(args[2], 'gid')
  local caller = args[3] or ''
  local ttl = need_int(args[4], 'reservation_ttl_ms', 1)
  local arrival = need_int(args[5], 'arrival flag', 0)
  local pick = args[6]
  if not PICKS[pick] then
    raise('BADARG', "pick must be 'first', 'busy' or 'idle', got " .. tostring(pick))
  end
  local withdraw = need_int(args[8], 'withdraw count', 0)
  if 8 + withdraw > #args then
    raise('BADARG', 'withdraw count ' .. withdraw .. ' exceeds the arguments')
  end
  local group_key, call_key = keys[NBASE + 1], keys[NBASE + 2]
  check_call_key(ctx, call_key, call)
  local sticky_key = sticky_of_now(ctx, NBASE + 3, args[7], gid)
  local members, index, rr = read_group(ctx, group_key, gid)
  local k = keys

  sweep(ctx, SWEEP_BATCH)
  if arrival == 1 then
    emit(ctx, 'arrived', 'call', call, 'group', gid, 'caller', caller)
  end
  -- Callers waiting in this group's queue go first: a new call does not take the agent a
  -- waiting caller is about to get, it queues behind them (queue_ahead in the reply).
  local entry, queue_ahead = nil, 0
  if redis.call('HEXISTS', k[K_QCFG], gid) == 1 then
    sweep_queue(ctx, QUEUE_SWEEP_BATCH)
    entry = entry_of(ctx, call)
    -- (A call that holds agents already, mid-decision, finishes its decision.)
    if not entry and (tonumber(redis.call('HGET', k[K_QN], gid)) or 0) > 0
        and redis.call('SCARD', call_key) == 0 then
      queue_ahead = 1
    end
  end
  for j = 9, 8 + withdraw do
    local agent = args[j]
    if drop_reservation(ctx, call, agent) then
      emit(ctx, 'released', 'call', call, 'agent', agent, 'group', gid, 'reason', 'replanned')
    end
    -- An agent live on this call stays in the set: release(call, '') finds it there.
    if redis.call('HEXISTS', k[K_LIVE], call .. SEP .. agent) == 0 then
      redis.call('SREM', call_key, agent)
    end
    -- A withdrawn pick was never offered: the round-robin cursor goes back to where the
    -- claim that took it found it, so the corrected plan continues the true rotation.
    if index[agent] and rr == index[agent] - 1 then
      rr = tonumber(redis.call('HGET', group_key, 'rr_prev')) or -1
      redis.call('HSET', group_key, 'rr', rr)
    end
  end
  local s = read_members(ctx, members)
  local rows_before, rr_before = pick == 'first' and flat_rows(s) or {}, rr
  local claimed = {}
  local deadline = ctx.now + ttl
  if queue_ahead == 1 then
    return {config_version(ctx), ctx.now, rr_before, '', 0, claimed, rows_before, 1}
  end

  local function take(agent, i, reason)
    local slot = call .. SEP .. agent
    redis.call('SADD', call_key, agent)
    -- NX: a reservation left over from a lost call set is never counted twice.
    if redis.call('ZADD', k[K_RESV], 'NX', deadline, slot) == 1 then
      redis.call('HINCRBY', k[C_RESV], agent, ONE)
      s.busy[i] = s.busy[i] + 1
      claimed[#claimed + 1] = agent
      rr = i - 1
      emit(ctx, 'offered', 'call', call, 'agent', agent, 'group', gid, 'caller', caller,
           'reason', reason)
    end
  end

  local sticky_agent, is_sticky = '', 0
  if sticky_key and caller ~= '' and redis.call('SCARD', call_key) == 0 then
    local agent = redis.call('HGET', sticky_key, caller)
    if agent and index[agent] then
      sticky_agent = agent
      if eligible(s, index[agent], ctx.now) then
        take(agent, index[agent], 'sticky')
        if #claimed > 0 then
          is_sticky = 1
        end
      end
    end
  end
  if is_sticky == 0 then
    -- Candidate waves in preference order, '' between them, as {first, last} arg indexes.
    local waves, j = {}, 9 + withdraw
    while j <= #args do
      local first = j
      while j <= #args and args[j] ~= '' do
        j = j + 1
      end
      waves[#waves + 1] = {first, j - 1}
      j = j + 1
    end
    -- Agents offered on this call already (one read, not one per candidate).
    local offered = {}
    for _, agent in ipairs(redis.call('SMEMBERS', call_key)) do
      offered[agent] = true
    end
    local function open_slot(agent)
      local i = index[agent]
      if i and not offered[agent] and eligible(s, i, ctx.now) then
        return i
      end
      return nil
    end
    local function take_open(wave)
      for a = wave[1], wave[2] do
        local i = open_slot(args[a])
        if i then
          take(args[a], i, '')
          offered[args[a]] = true
        end
      end
    end
    if pick == 'first' then
      -- The first wave with an eligible member is taken (all its eligible members).
      for _, wave in ipairs(waves) do
        take_open(wave)
        if #claimed > 0 then
          break
        end
      end
    else
      -- The wave whose first eligible member ranks best on the current counts.
      local best, best_key
      for _, wave in ipairs(waves) do
        for a = wave[1], wave[2] do
          local i = open_slot(args[a])
          if i then
            local key = pick == 'busy' and {s.busy[i], s.idle[i]} or {s.idle[i], 0}
            if best == nil or key[1] < best_key[1]
                or (key[1] == best_key[1] and key[2] < best_key[2]) then
              best, best_key = wave, key
            end
            break
          end
        end
      end
      if best then
        take_open(best)
      end
    end
  end
  if #claimed > 0 then
    redis.call('HSET', group_key, 'rr', rr, 'rr_prev', rr_before)
    redis.call('EXPIRE', call_key, CALL_TTL_S)
    if entry then
      entry.state = 'ringing'
      entry_put(ctx, call, entry)
    end
  end
  return {config_version(ctx), ctx.now, rr_before, sticky_agent, is_sticky, claimed, rows_before,
          0}
end

-- disp_answered: an offered agent answered; its reservation becomes a live call.
-- KEYS: 1..22 common; 23 call set {t:T}:call:<call>; 24 end marker {t:T}:ended:<call>;
--       25..27 (with sticky bounds) the sticky hashes of three consecutive local days, as
--       for disp_claim.
-- ARGV: 1 call, 2 gid, 3 agent, 4 caller ('' = no sticky), 5 sticky bounds of KEYS 25..27
--       ('' = none; see sticky_of_now), 6 (optional) the node that holds the call's dialog
--       (KEYS[21]: when its heartbeat lapses, the other nodes release the call).
--       The call's other reservations are released (event released, reason other_answered).
-- Returns: 'ok' reservation converted; 'late' reservation gone (expired) but a free slot was
--          taken; 'over' reservation gone and no free slot: nothing counted (live + resv <= max
--          holds; the router decides about the call); 'dup' live call already recorded,
--          nothing changed; 'ended' the whole call was released already (an answer recorded
--          after its end, e.g. sent by another worker without waiting): nothing changed, so
--          no live call outlives its call.
--          ok/late: live + 1, live entry, missed = 0, the caller's agent of the day Redis'
--          TIME falls in set (that day's hash expires at the day's end, PEXPIREAT).
--          A queued call leaves its queue (event dequeued, reason answered); the agents whose
--          reservations the answer released ring their groups' doorbells.
-- Errors: BADARG for an empty call/gid/agent, bad sticky bounds or a key that does not
--         match call/gid.
local function answered(keys, args)
  local ctx = open(keys, 2)
  local call = need_text(args[1], 'call')
  local gid = need_text(args[2], 'gid')
  local agent = need_text(args[3], 'agent')
  local caller = args[4] or ''
  local node = args[6] or ''
  local call_key, end_key = keys[NBASE + 1], keys[NBASE + 2]
  check_call_key(ctx, call_key, call)
  check_end_key(ctx, end_key, call)
  local sticky_key, sticky_at = sticky_of_now(ctx, NBASE + 3, args[5], gid)
  local k = keys
  local slot = call .. SEP .. agent

  if redis.call('HEXISTS', k[K_LIVE], slot) == 1 then
    return 'dup'
  end
  if redis.call('EXISTS', end_key) == 1 then
    return 'ended'
  end
  local outcome = 'ok'
  if not drop_reservation(ctx, call, agent) then
    local live = tonumber(redis.call('HGET', k[C_LIVE], agent)) or 0
    local resv = tonumber(redis.call('HGET', k[C_RESV], agent)) or 0
    local max = tonumber(redis.call('HGET', k[C_MAX], agent)) or 0
    outcome = (live + resv < max) and 'late' or 'over'
  end
  local freed, any_freed = release_reservations(ctx, call_key, call, agent, 'other_answered')
  local queued = entry_of(ctx, call)
  if queued then
    queue_remove(ctx, call, queued, 'answered')
  end
  if any_freed then
    doorbells_for(ctx, freed)
  end

  if outcome ~= 'over' then
    redis.call('HINCRBY', k[C_LIVE], agent, ONE)
    redis.call('HSET', k[K_LIVE], slot, gid .. SEP .. ctx.now_text)
    if node ~= '' then
      redis.call('HSET', k[K_LNODE], call, node)
    end
    -- release(call, '') finds the live agent through the set; keep it for the call's life.
    redis.call('SADD', call_key, agent)
    redis.call('EXPIRE', call_key, CALL_TTL_S)
    if configured(ctx, agent) then
      redis.call('HSET', k[C_MISSED], agent, '0')
    end
    if sticky_key and caller ~= '' then
      redis.call('HSET', sticky_key, caller, agent)
      redis.call('PEXPIREAT', sticky_key, sticky_at)
    end
  end
  emit(ctx, 'answered', 'call', call, 'agent', agent, 'group', gid, 'caller', caller,
       'reason', outcome ~= 'ok' and outcome or '')
  return outcome
end

-- disp_failed: an offer ended without answer.
-- KEYS: 1..22 common.
-- ARGV: 1 call, 2 agent, 3 reason: busy | noanswer | declined | error (count a missed offer)
--       or cancelled | unreachable (do not: the caller gave up / the phone was not registered).
--       Only a reservation that still exists is released and counted (event failed); a
--       failure reported after the reservation expired or a repeated report changes nothing,
--       so the reservation TTL must exceed the ring timeout. The freed agent rings the
--       doorbells of its queued groups. At missed >= autopause > 0 an
--       available agent is paused (reason 'auto: N missed offers', event state_changed).
-- Returns: {released 0/1, paused 0/1}
-- Errors: BADARG for an empty call/agent or an unknown reason.
local function failed(keys, args)
  local ctx = open(keys, 0)
  local call = need_text(args[1], 'call')
  local agent = need_text(args[2], 'agent')
  local reason = args[3] or ''
  if not MISS_REASONS[reason] and not NO_MISS_REASONS[reason] then
    raise('BADARG', 'unknown failure reason ' .. reason)
  end
  local k = keys
  if not drop_reservation(ctx, call, agent) then
    return {0, 0}
  end
  local paused = 0
  if MISS_REASONS[reason] and configured(ctx, agent) then
    local missed = redis.call('HINCRBY', k[C_MISSED], agent, 1)
    local limit = tonumber(redis.call('HGET', k[C_AUTOPAUSE], agent)) or 0
    local status = tonumber(redis.call('HGET', k[C_STATUS], agent)) or LOGGED_OUT
    if limit > 0 and missed >= limit and status == AVAILABLE then
      local why = 'auto: ' .. missed .. ' missed offers'
      redis.call('HSET', k[C_STATUS], agent, PAUSED)
      redis.call('HSET', k[C_REASON], agent, why)
      emit(ctx, 'state_changed', 'agent', agent, 'status', PAUSED, 'reason', why)
      paused = 1
    end
  end
  emit(ctx, 'failed', 'call', call, 'agent', agent, 'reason', reason)
  doorbells_for(ctx, {[agent] = true})
  return {1, paused}
end

-- disp_release: the call ended (or one agent's leg of it).
-- KEYS: 1..22 common; 23 call set {t:T}:call:<call>; 24 end marker {t:T}:ended:<call>.
-- ARGV: 1 call, 2 agent, or '' for every agent offered on the call; 3 (optional) outcome of
--       the call for reports: answered | abandoned (the caller gave up before an answer) |
--       no_answer (the group's no-answer target ended it) | failed | expired (no node ended
--       it: it outlived the dialog timeout, the backstop released it) | lost (the node that
--       held it died: its heartbeat lapsed, or it restarted) | '' (unknown); only with
--       agent ''.
--       Releases all remaining reservations of the call without counting a miss (event
--       released, reason call_released); ends the live call of the agent(s): live - 1,
--       wrapuntil = now + wrapup * 1000, idle = now (event released, reason hangup). The call
--       set is deleted once no live call of the call is left. Releasing the whole call
--       (agent '') also appends event ended {call, outcome} after those, once per call: the
--       end marker (SET NX, expiring after CALL_TTL_S) remembers it was emitted, even for a
--       call whose claims reserved nobody and so never had a call set. Repeating it changes
--       nothing (within CALL_TTL_S). A live call of a queued group adds its handle time to
--       the group's ({t:T}:ht); a call still queued leaves its queue (abandoned, or answered
--       for that outcome); every freed agent rings its queued groups' doorbells.
-- Returns: number of live calls ended.
-- Errors: BADARG for an empty call, a mismatching call or marker key, an unknown outcome or
--         an outcome with an agent.
local function release(keys, args)
  local ctx = open(keys, 2)
  local call = need_text(args[1], 'call')
  local agent = args[2] or ''
  local outcome = args[3] or ''
  local call_key, end_key = keys[NBASE + 1], keys[NBASE + 2]
  check_call_key(ctx, call_key, call)
  check_end_key(ctx, end_key, call)
  if outcome ~= '' and not OUTCOMES[outcome] then
    raise('BADARG', 'unknown outcome ' .. outcome)
  end
  if outcome ~= '' and agent ~= '' then
    raise('BADARG', 'an outcome ends the whole call: agent must be empty')
  end
  local k = keys

  local freed, any_freed = release_reservations(ctx, call_key, call, nil, 'call_released')
  local offered = redis.call('SMEMBERS', call_key)
  local targets = offered
  if agent ~= '' then
    targets = {agent}
  end
  local ended = 0
  for _, a in ipairs(targets) do
    local slot = call .. SEP .. a
    local entry = redis.call('HGET', k[K_LIVE], slot)
    if entry and redis.call('HDEL', k[K_LIVE], slot) == 1 then
      ended = ended + 1
      local known = counter_down(ctx, C_LIVE, a)
      if known == nil then
        known = configured(ctx, a)
      end
      if known then
        -- No wrap-up after a call nobody saw end (its node died, or it expired): the agent
        -- has been free for a while already.
        if outcome ~= 'lost' and outcome ~= 'expired' then
          local wrapup = num(redis.call('HGET', k[C_WRAPUP], a)) or 0
          redis.call('HSET', k[C_WRAPUNTIL], a,
                     wrapup == 0 and ctx.now_text or ctx.now + wrapup * 1000)
        end
        redis.call('HSET', k[C_IDLE], a, ctx.now_text)
      end
      local gid, start = split_slot(entry)
      emit(ctx, 'released', 'call', call, 'agent', a, 'group', gid, 'reason', 'hangup')
      record_handle_time(ctx, gid, ctx.now - (tonumber(start) or ctx.now))
      freed[a], any_freed = true, true
    end
  end
  -- A caller still queued when its call ends hung up (its node normally says so first).
  local queued = agent == '' and entry_of(ctx, call)
  if queued then
    queue_remove(ctx, call, queued, outcome == 'answered' and 'answered' or 'abandoned')
  end
  if agent == '' and redis.call('SET', end_key, ONE, 'NX', 'EX', CALL_TTL_S) then
    emit(ctx, 'ended', 'call', call, 'outcome', outcome)
  end
  if any_freed then
    doorbells_for(ctx, freed)
  end
  for _, a in ipairs(offered) do
    if redis.call('HEXISTS', k[K_LIVE], call .. SEP .. a) == 1 then
      return ended
    end
  end
  redis.call('DEL', call_key)
  redis.call('HDEL', k[K_LNODE], call)
  return ended
end

-- disp_set_state: login, logout, pause, unpause.
-- KEYS: 1..22 common.
-- ARGV: 1 agent, 2 status (0 available, 1 paused, 2 logged out), 3 reason, 4 (optional)
--       audit JSON as for disp_config_put ('' none), 5 (optional) the statuses the change
--       expects the agent in, as digits ("1": an unpause changes only a paused agent; ''
--       any): compare and set, so a late unpause never undoes a logout.
--       Available resets the missed-offer count. Event state_changed (with the audit's actor)
--       only when status or reason changes; the audit event whenever one is passed. An agent
--       that becomes available (login, unpause) rings its queued groups' doorbells.
-- Returns: the previous status.
-- Errors: NOAGENT when the agent is not configured; STATE (nothing changed) when it is not
--         in an expected status; BADARG for a bad status or audit.
local function set_state(keys, args)
  local ctx = open(keys, 0)
  local agent = need_text(args[1], 'agent')
  local status = need_int(args[2], 'status', 0)
  local reason = args[3] or ''
  local audit = need_audit(args[4])
  if status > LOGGED_OUT then
    raise('BADARG', 'status must be 0, 1 or 2, got ' .. status)
  end
  if not configured(ctx, agent) then
    raise('NOAGENT', 'agent ' .. agent .. ' is not configured')
  end
  local k = keys
  local previous = tonumber(redis.call('HGET', k[C_STATUS], agent)) or LOGGED_OUT
  local previous_reason = redis.call('HGET', k[C_REASON], agent) or ''
  local expected = args[5] or ''
  if expected ~= '' and not string.find(expected, tostring(previous), 1, true) then
    local names = {}
    for digit in string.gmatch(expected, '%d') do
      names[#names + 1] = STATUS_NAMES[tonumber(digit) + 1]
    end
    raise('STATE', 'agent ' .. agent .. ' is ' .. STATUS_NAMES[previous + 1] .. ', not '
          .. table.concat(names, ' or '))
  end
  if status == AVAILABLE then
    redis.call('HSET', k[C_MISSED], agent, '0')
  end
  if previous ~= status or previous_reason ~= reason then
    redis.call('HSET', k[C_STATUS], agent, status)
    redis.call('HSET', k[C_REASON], agent, reason)
    emit(ctx, 'state_changed', 'agent', agent, 'status', status, 'reason', reason,
         'actor', audit and audit.actor)
  end
  emit_audit(ctx, audit, 'status', status, 'reason', reason)
  if status == AVAILABLE and previous ~= AVAILABLE then
    doorbells_for(ctx, {[agent] = true})  -- a login or unpause may be the agent a caller awaits
  end
  return previous
end

-- A record set (ARGV 2) or removed ('') under id ARGV 1 in the tenant's hash KEYS[23] (named
-- by suffix), with an audit event (ARGV 3) when the hash changed: tokens and credentials.
local function record_set(keys, args, suffix, what)
  local ctx = open(keys, 1)
  local id = need_text(args[1], what)
  local record = args[2] or ''
  local audit = need_audit(args[3])
  local key = own_key(ctx, keys[NBASE + 1], suffix)
  local changed
  if record == '' then
    changed = redis.call('HDEL', key, id)
  else
    redis.call('HSET', key, id, record)
    changed = 1
  end
  if changed == 1 then
    emit_audit(ctx, audit)
  end
  return changed
end

-- disp_token_set: adds, replaces or revokes an admin API token of the tenant.
-- KEYS: 1..22 common; 23 tokens hash {t:T}:tokens (token id -> record).
-- ARGV: 1 token id, 2 record (opaque to the library: JSON with the token's digest and role;
--       '' revokes), 3 (optional) audit JSON as for disp_config_put.
--       The audit event is appended only when the hash changed.
-- Returns: 1 when the hash changed (added, replaced, or an existing token revoked), else 0.
-- Errors: BADARG for an empty id, a key that is not the tenant's tokens hash, a bad audit.
local function token_set(keys, args)
  return record_set(keys, args, 'tokens', 'token id')
end

-- disp_snapshot: a group's live state for planning, after sweeping like disp_claim.
-- KEYS: 1..22 common; 23 group {t:T}:g:<gid>.
-- ARGV: 1 gid.
-- Returns: {version, now_ms, rr, {status, busy, max, wrapuntil, idle per member}}
--          (the same row layout as disp_claim).
-- Errors: NOGROUP when the group is not configured; BADARG for a mismatching key.
local function snapshot(keys, args)
  local ctx = open(keys, 1)
  local gid = need_text(args[1], 'gid')
  local members, _, rr = read_group(ctx, keys[NBASE + 1], gid)
  sweep(ctx, SWEEP_BATCH)
  return {config_version(ctx), ctx.now, rr, flat_rows(read_members(ctx, members))}
end

-- disp_sweep: expires overdue reservations (resv - 1, event expired); the freed agents ring
-- their queued groups' doorbells.
-- KEYS: 1..22 common.
-- ARGV: 1 limit (max reservations expired by this call, >= 1).
-- Returns: the number expired.
-- Errors: BADARG for a bad limit.
local function sweep_expired(keys, args)
  local ctx = open(keys, 0)
  return sweep(ctx, need_int(args[1], 'limit', 1))
end

-- disp_queue_join: a caller nobody can take now waits in its group's queue.
-- KEYS: 1..22 common.
-- ARGV: 1 call, 2 gid, 3 caller, 4 priority (0..9; higher waits ahead), 5 node (the node that
--       holds the caller's INVITE; its doorbell channel is dispatcher:node:<node>), 6 lease_ms.
--       Sweeps lapsed leases first. A call already queued (back from a ring round nobody
--       answered) keeps its place: state waiting, its lease renewed, not notified again
--       for REJOIN_MS * 2^(rounds - 1) ms (at most REJOIN_MAX_MS; see entries). A new call is refused
--       when the queue holds max-length callers ('full') or no member is logged in, so
--       nobody could ever take it ('no_agents'), with an event overflowed {call, group,
--       caller, reason}; else it is queued (event queued with its position). Then the group's doorbells ring: an agent freed since the caller's claim
--       found none is offered at once.
-- Returns: {status, position (0 unless queued), callers waiting in the group}; status is
--          'queued', 'waiting' (rejoined), 'full' or 'no_agents'.
-- Errors: NOQUEUE when the group has no queue; BADARG for an empty call, gid or node, a bad
--         priority or lease.
local function queue_join(keys, args)
  local ctx = open(keys, 0)
  local call = need_text(args[1], 'call')
  local gid = need_text(args[2], 'gid')
  local caller = args[3] or ''
  local priority = need_int(args[4], 'priority', 0)
  local node = need_text(args[5], 'node')
  local lease = need_int(args[6], 'lease_ms', 1)
  if priority > 9 then
    raise('BADARG', 'priority must be 0..9, got ' .. priority)
  end
  local max_length, members = queue_config(ctx, gid)
  if not max_length then
    raise('NOQUEUE', 'group ' .. gid .. ' has no queue')
  end
  local k = keys
  sweep_queue(ctx, QUEUE_SWEEP_BATCH)
  local waiting = tonumber(redis.call('HGET', k[K_QN], gid)) or 0
  local e = entry_of(ctx, call)
  local status = 'waiting'
  if e then
    e.rounds = e.rounds + 1
    e.state, e.node = 'waiting', node
    e['until'] = ctx.now + math.min(REJOIN_MS * 2 ^ (e.rounds - 1), REJOIN_MAX_MS)
  else
    if waiting >= max_length then
      emit(ctx, 'overflowed', 'call', call, 'group', gid, 'caller', caller, 'reason', 'full')
      return {'full', 0, waiting}
    end
    local s = read_members(ctx, members)
    local staffed = false
    for i = 1, s.n do
      staffed = staffed or (s.status[i] ~= LOGGED_OUT and s.max[i] > 0)
    end
    if not staffed then
      emit(ctx, 'overflowed', 'call', call, 'group', gid, 'caller', caller,
           'reason', 'no_agents')
      return {'no_agents', 0, waiting}
    end
    e = {gid = gid, caller = caller, priority = priority, joined = ctx.now, node = node,
         state = 'waiting', ['until'] = 0, rounds = 0}
    redis.call('ZADD', k[K_Q], (9 - priority) * PRIORITY_SPAN + ctx.now, gid .. SEP .. call)
    waiting = redis.call('HINCRBY', k[K_QN], gid, 1)
    status = 'queued'
  end
  entry_put(ctx, call, e)
  redis.call('ZADD', k[K_QLEASE], ctx.now + lease, call)
  local position = position_of(ctx, gid, call)
  if status == 'queued' then
    emit(ctx, 'queued', 'call', call, 'group', gid, 'caller', caller, 'priority', priority,
         'position', position)
  end
  ring_doorbells(ctx, gid, members)
  return {status, position, waiting}
end

-- disp_queue_leave: a queued caller leaves its queue without an answer from it.
-- KEYS: 1..22 common.
-- ARGV: 1 call, 2 reason: abandoned (hung up) | timeout (waited max_wait) | no_agents |
--       error (its node could not keep it, e.g. no media) | answered | lost.
--       Event dequeued {call, group, caller, reason, wait_ms}; the group's doorbells ring (a
--       notified entry leaving frees the agent promised to it).
-- Returns: the caller's wait in ms, or -1 when it was not queued (nothing changed).
-- Errors: BADARG for an empty call or an unknown reason.
local function queue_leave(keys, args)
  local ctx = open(keys, 0)
  local call = need_text(args[1], 'call')
  local reason = args[2] or ''
  if not LEAVE_REASONS[reason] then
    raise('BADARG', 'unknown reason to leave a queue ' .. reason)
  end
  local e = entry_of(ctx, call)
  if not e then
    return -1
  end
  queue_remove(ctx, call, e, reason)
  local _, members = queue_config(ctx, e.gid)
  if members then
    ring_doorbells(ctx, e.gid, members)
  end
  return ctx.now - e.joined
end

-- disp_queue_keep: a node's periodic look after the callers it holds (its keeper, ~4/s).
-- KEYS: 1..22 common.
-- ARGV: 1 node, 2 lease_ms, 3 stats (1: add the estimate's inputs for the groups of the held
--       calls), 4 N, 5..4+N the calls this node holds, then A, then A triples (call,
--       position, announced wait in s or '') of the announcements made since the last keep.
--       Sweeps lapsed leases (any node's), renews the leases of the held calls queued by this
--       node, rings every queued group's doorbells (wrap-ups end, notifications lapse), and
--       appends an event announced {call, group, position, wait_s} per announcement.
-- Returns: {now_ms, {call, state, position, waiting, joined_ms, gid} per held call in ARGV
--          order (state 'gone' and zeros when it is not queued: swept or never joined),
--          {gid, {agent, status, max, wrapup_s, wrapuntil_ms, {start_ms of each of its live
--          calls}} per member, 'handle times ms, newest first'} per group of a held call when
--          stats = 1}.
-- Errors: BADARG for an empty node, a bad lease, count or flag.
local function queue_keep(keys, args)
  local ctx = open(keys, 0)
  local node = need_text(args[1], 'node')
  local lease = need_int(args[2], 'lease_ms', 1)
  local want_stats = need_int(args[3], 'stats flag', 0)
  local n = need_int(args[4], 'held count', 0)
  local na = need_int(args[5 + n], 'announcement count', 0)
  if #args ~= 5 + n + 3 * na then
    raise('BADARG', 'expected ' .. (5 + n + 3 * na) .. ' arguments, got ' .. #args)
  end
  local k = keys
  sweep_queue(ctx, SWEEP_BATCH)
  for j = 0, na - 1 do
    local call = args[6 + n + 3 * j]
    local e = entry_of(ctx, call)
    emit(ctx, 'announced', 'call', call, 'group', e and e.gid, 'position', args[7 + n + 3 * j],
         'wait_s', args[8 + n + 3 * j])
  end
  local qcfg = redis.call('HGETALL', k[K_QCFG])
  for i = 1, #qcfg, 2 do
    local _, members = queue_config(ctx, qcfg[i])
    ring_doorbells(ctx, qcfg[i], members)
  end
  -- Positions in one pass over every waiting caller of the tenant.
  local position, waiting = {}, {}
  for _, member in ipairs(redis.call('ZRANGE', k[K_Q], 0, -1)) do
    local gid, call = split_slot(member)
    waiting[gid] = (waiting[gid] or 0) + 1
    position[call] = waiting[gid]
  end
  local held, groups = {}, {}
  for j = 1, n do
    local call = args[4 + j]
    local e = entry_of(ctx, call)
    if e and e.node == node then
      redis.call('ZADD', k[K_QLEASE], ctx.now + lease, call)
      held[#held + 1] = {call, e.state, position[call] or 0, waiting[e.gid] or 0, e.joined, e.gid}
      groups[e.gid] = true
    else
      held[#held + 1] = {call, 'gone', 0, 0, 0, ''}
    end
  end
  local stats = {}
  if want_stats == 1 then
    -- Every live call's start by agent: a member busy on another group's call is busy here.
    local starts = {}
    local live = redis.call('HGETALL', k[K_LIVE])
    for i = 1, #live, 2 do
      local _, agent = split_slot(live[i])
      local _, start = split_slot(live[i + 1])
      starts[agent] = starts[agent] or {}
      table.insert(starts[agent], tonumber(start))
    end
    for gid in pairs(groups) do
      local _, members = queue_config(ctx, gid)
      if members then
        local s = read_members(ctx, members)
        local wrapup = hmget(k[C_WRAPUP], members)
        local rows = {}
        for i = 1, s.n do
          rows[i] = {members[i], s.status[i], s.max[i], tonumber(wrapup[i]) or 0,
                     s.wrapuntil[i], starts[members[i]] or {}}
        end
        stats[#stats + 1] = {gid, rows, redis.call('HGET', k[K_HT], gid) or ''}
      end
    end
  end
  return {ctx.now, held, stats}
end

-- disp_registration: an agent's phones registered (or the last one unregistered), as the
-- node that handled the REGISTER saw it. The admin side shows an agent without a phone as
-- such, and a phone that comes up may be the agent a queued caller awaits.
-- KEYS: 1..22 common; 23 {t:T}:reg (agent -> epoch ms when its newest contact lapses).
-- ARGV: 1 agent, 2 expires_ms (0: no contact left).
--       A change between registered and not appends an event registration {agent,
--       registered 1|0} (refreshes append nothing) and, when it came up, rings the
--       doorbells of its queued groups.
-- Returns: 1 when the agent's registered-or-not changed, else 0.
-- Errors: BADARG for an empty agent, a bad time, a key not the tenant's.
local function registration(keys, args)
  local ctx = open(keys, 1)
  local agent = need_text(args[1], 'agent')
  local expires = need_int(args[2], 'expires_ms', 0)
  local reg = own_key(ctx, keys[NBASE + 1], 'reg')
  local before = tonumber(redis.call('HGET', reg, agent)) or 0
  local was, is = before > ctx.now, expires > ctx.now
  if is then
    redis.call('HSET', reg, agent, expires)
  else
    redis.call('HDEL', reg, agent)
  end
  if was == is then
    return 0
  end
  emit(ctx, 'registration', 'agent', agent, 'registered', is and 1 or 0)
  if is then
    doorbells_for(ctx, {[agent] = true})
  end
  return 1
end

-- The names index tenant -> its names ({dispatcher}:tenant_names, disp_names_put's KEYS[3]),
-- built once from the two hashes when an older library wrote them (no marker yet).
local NAMES_INDEXED = ''

local function index_names(keys)
  if redis.call('HEXISTS', keys[3], NAMES_INDEXED) == 1 then
    return
  end
  local held = {}
  for i = 1, 2 do
    local all = redis.call('HGETALL', keys[i])
    for j = 1, #all, 2 do
      local lists = held[all[j + 1]] or {{}, {}}
      held[all[j + 1]] = lists
      lists[i][#lists[i] + 1] = all[j]
    end
  end
  for tenant, lists in pairs(held) do
    redis.call('HSET', keys[3], tenant, table.concat(lists[1], ',') .. SEP ..
      table.concat(lists[2], ','))
  end
  redis.call('HSET', keys[3], NAMES_INDEXED, '1')
end

-- disp_names_put: the SIP domains and dialled numbers (DIDs) that lead to a tenant, in the
-- carrier-wide index every node reads to map a request to its tenant. A name belongs to at
-- most one tenant: the put is refused, changing nothing, when another tenant holds one.
-- KEYS: 1 {dispatcher}:domains (domain -> tenant), 2 {dispatcher}:dids (DID -> tenant),
--       3 {dispatcher}:tenant_names (tenant -> the names it holds, '<domains>\31<dids>',
--       each comma-separated; field '' marks the index complete), 4 {dispatcher}:names_version
--       (a counter, incremented when a name is added or released: workers that cache names
--       look at it instead of asking about each name again); the hash tag keeps them in one
--       slot (not the tenants': this function touches no tenant key).
-- ARGV: 1 tenant, 2 its domains (comma-separated, '' none), 3 its DIDs (the same).
--       Names the tenant held and no longer lists are released; '' '' releases all (a
--       deleted tenant).
-- Returns: {names added, names released}.
-- Cost: O(the tenant's names), whatever the number of tenants. Once, on an index written
--       before KEYS[3] existed (no marker), O(every tenant's names) to build KEYS[3].
-- Errors: TAKEN naming the first name another tenant holds and that tenant; BADARG for an
--         empty tenant or fewer than 4 KEYS.
local function names_put(keys, args)
  if #keys < 4 then
    raise('BADARG', 'expected 4 keys, got ' .. #keys)
  end
  local tenant = need_text(args[1], 'tenant')
  local wanted = {split_csv(args[2] or ''), split_csv(args[3] or '')}
  for i = 1, 2 do
    for _, name in ipairs(wanted[i]) do
      local owner = redis.call('HGET', keys[i], name)
      if owner and owner ~= tenant then
        raise('TAKEN', (i == 1 and 'domain ' or 'DID ') .. name .. ' belongs to tenant ' .. owner)
      end
    end
  end
  index_names(keys)
  local held = redis.call('HGET', keys[3], tenant) or SEP
  local at = string.find(held, SEP, 1, true)
  local old = {split_csv(string.sub(held, 1, at - 1)), split_csv(string.sub(held, at + 1))}
  local added, released = 0, 0
  for i = 1, 2 do
    local keep = {}
    for _, name in ipairs(wanted[i]) do
      keep[name] = true
      added = added + redis.call('HSET', keys[i], name, tenant)
    end
    for _, name in ipairs(old[i]) do
      if not keep[name] and redis.call('HGET', keys[i], name) == tenant then
        released = released + redis.call('HDEL', keys[i], name)
      end
    end
  end
  if #wanted[1] + #wanted[2] == 0 then
    redis.call('HDEL', keys[3], tenant)
  else
    redis.call('HSET', keys[3], tenant, table.concat(wanted[1], ',') .. SEP ..
      table.concat(wanted[2], ','))
  end
  if added + released > 0 then
    redis.call('INCR', keys[4])
  end
  return {added, released}
end

-- disp_credential_put: sets or removes a SIP user's credentials (HA1 digests only).
-- KEYS: 1..22 common; 23 {t:T}:cred (SIP user -> record JSON: realm, md5, sha256).
-- ARGV: 1 user, 2 record ('' removes), 3 (optional) audit JSON (its detail never holds a
--       digest).
-- Returns: 1 when the hash changed, else 0.
-- Errors: BADARG for an empty user, a bad audit, a key not the tenant's.
local function credential_put(keys, args)
  return record_set(keys, args, 'cred', 'user')
end

-- disp_tenant_delete: deletes a batch of a tenant's keys (the caller found them with SCAN
-- MATCH {t:T}:*; all in the tenant's slot). Refused while the tenant has live calls or
-- ringing offers, unless forced: a deleted tenant's calls would be released by nobody.
-- KEYS: 1..22 common; 23.. the keys to delete (each must carry the tenant's hash tag).
-- ARGV: 1 force (0 or 1).
-- Returns: the number of keys deleted.
-- Errors: BUSY naming the live calls and offers when not forced; BADARG for a key of
--         another tenant or a bad flag.
local function tenant_delete(keys, args)
  local ctx = open(keys, 0)
  local force = need_int(args[1], 'force', 0)
  local prefix = string.sub(ctx.keys[K_CONFIG], 1, -7)
  if force == 0 then
    local live = redis.call('HLEN', keys[K_LIVE])
    local resv = redis.call('ZCARD', keys[K_RESV])
    if live + resv > 0 then
      raise('BUSY', 'the tenant has ' .. live .. ' live calls and ' .. resv
            .. ' ringing offers; force to delete anyway')
    end
  end
  local deleted = 0
  for i = NBASE + 1, #keys do
    if string.sub(keys[i], 1, #prefix) ~= prefix then
      raise('BADARG', 'key ' .. keys[i] .. ' is not a key of this tenant')
    end
    deleted = deleted + redis.call('DEL', keys[i])
  end
  return deleted
end

-- disp_node_beat: a node's heartbeat, and the nodes whose heartbeat lapsed.
-- KEYS: 1 {dispatcher}:nodes (zset node -> its last beat, Redis' ms); no tenant key.
-- ARGV: 1 node, 2 dead_after_ms (a node silent that long is dead), 3 forget ('' or a dead
--       node whose calls the caller has released in every tenant: removed from the set).
-- Returns: the dead nodes (other than ARGV 1).
-- Errors: BADARG for an empty node or a bad time.
local function node_beat(keys, args)
  local node = need_text(args[1], 'node')
  local dead_after = need_int(args[2], 'dead_after_ms', 1)
  local now = now_ms()
  if args[3] and args[3] ~= '' then
    redis.call('ZREM', keys[1], args[3])
  end
  redis.call('ZADD', keys[1], now, node)
  return redis.call('ZRANGEBYSCORE', keys[1], '-inf', '(' .. (now - dead_after))
end

-- disp_voicemail_put: a recorded voicemail message is stored (its WAV is a file on the node
-- that recorded it; this is its metadata).
-- KEYS: 1..22 common; 23 {t:T}:vm (message id -> record JSON); 24 {t:T}:vmi (zset of message
--       ids by recording start, for listing and retention).
-- ARGV: 1 message id, 2 record JSON (opaque here: group, caller, times, duration, file,
--       heard), 3 started_ms, 4 group, 5 caller, 6 duration_ms.
--       Appends an event voicemail {message (its id), group, caller, duration_ms}.
-- Returns: 1 when stored, 0 when the id was stored already (unchanged).
-- Errors: BADARG for an empty id or record, a bad time, a key not the tenant's.
local function voicemail_put(keys, args)
  local ctx = open(keys, 2)
  local id = need_text(args[1], 'message id')
  local record = need_text(args[2], 'record')
  local started = need_int(args[3], 'started_ms', 0)
  local vm, vmi = own_key(ctx, keys[NBASE + 1], 'vm'), own_key(ctx, keys[NBASE + 2], 'vmi')
  if redis.call('HSETNX', vm, id, record) == 0 then
    return 0
  end
  redis.call('ZADD', vmi, started, id)
  emit(ctx, 'voicemail', 'message', id, 'group', args[4], 'caller', args[5],
       'duration_ms', args[6])
  return 1
end

-- disp_voicemail_update: marks a message heard or new again, or deletes it.
-- KEYS: 23 {t:T}:vm, 24 {t:T}:vmi as for disp_voicemail_put.
-- ARGV: 1 message id, 2 new record JSON ('' deletes the message), 3 (optional) audit JSON.
-- Returns: the record before the change, or false when there is no such message.
-- Errors: BADARG for an empty id, a bad audit, a key not the tenant's.
local function voicemail_update(keys, args)
  local ctx = open(keys, 2)
  local id = need_text(args[1], 'message id')
  local record = args[2] or ''
  local audit = need_audit(args[3])
  local vm, vmi = own_key(ctx, keys[NBASE + 1], 'vm'), own_key(ctx, keys[NBASE + 2], 'vmi')
  local before = redis.call('HGET', vm, id)
  if not before then
    return false
  end
  if record == '' then
    redis.call('HDEL', vm, id)
    redis.call('ZREM', vmi, id)
    emit_audit(ctx, audit, 'voicemail', id, 'deleted', 1)
  else
    redis.call('HSET', vm, id, record)
    emit_audit(ctx, audit, 'voicemail', id)
  end
  return before
end

-- disp_voicemail_expire: deletes the messages recorded before a time (retention).
-- KEYS: 23 {t:T}:vm, 24 {t:T}:vmi as for disp_voicemail_put.
-- ARGV: 1 before_ms (messages that started earlier go), 2 limit (at most that many).
-- Returns: the records deleted (their files are the caller's to delete).
-- Errors: BADARG for a bad time or limit, a key not the tenant's.
local function voicemail_expire(keys, args)
  local ctx = open(keys, 2)
  local before = need_int(args[1], 'before_ms', 0)
  local limit = need_int(args[2], 'limit', 1)
  local vm, vmi = own_key(ctx, keys[NBASE + 1], 'vm'), own_key(ctx, keys[NBASE + 2], 'vmi')
  local ids = redis.call('ZRANGEBYSCORE', vmi, '-inf', '(' .. before, 'LIMIT', 0, limit)
  local gone = {}
  for _, id in ipairs(ids) do
    local record = redis.call('HGET', vm, id)
    if record then
      gone[#gone + 1] = record
    end
    redis.call('HDEL', vm, id)
    redis.call('ZREM', vmi, id)
  end
  return gone
end

-- disp_prompt_put: an admin's recording replaces (or adds) one of the tenant's prompts;
-- nodes fetch it by digest and cache it as a file, so a replaced prompt is never played
-- stale.
-- KEYS: 1..22 common; 23 {t:T}:prompts (prompt id -> sha256 hex of its audio);
--       24 {t:T}:promptdata (sha256 hex -> audio bytes, in the playback format).
-- ARGV: 1 prompt id, 2 sha256 hex ('' deletes the prompt), 3 audio bytes (ignored when
--       deleting), 4 (optional) audit JSON.
--       Audio no other prompt id uses any more is dropped. Appends an audit event.
-- Returns: the previous digest, or false when the prompt is new (or was absent on delete).
-- Errors: BADARG for an empty id, empty audio, a bad audit, a key not the tenant's.
local function prompt_put(keys, args)
  local ctx = open(keys, 2)
  local id = need_text(args[1], 'prompt id')
  local digest = args[2] or ''
  local audit = need_audit(args[4])
  local ids = own_key(ctx, keys[NBASE + 1], 'prompts')
  local data = own_key(ctx, keys[NBASE + 2], 'promptdata')
  local previous = redis.call('HGET', ids, id)
  if digest == '' then
    redis.call('HDEL', ids, id)
  else
    need_text(args[3], 'audio')
    redis.call('HSET', data, digest, args[3])
    redis.call('HSET', ids, id, digest)
  end
  if previous and previous ~= digest then
    local still = false
    local all = redis.call('HVALS', ids)
    for _, d in ipairs(all) do
      still = still or d == previous
    end
    if not still then
      redis.call('HDEL', data, previous)
    end
  end
  emit_audit(ctx, audit, 'prompt', id, 'digest', digest)
  return previous or false
end

-- Every function writes (even disp_snapshot sweeps), so none is registered no-writes.
redis.register_function('disp_config_put', config_put)
redis.register_function('disp_claim', claim)
redis.register_function('disp_answered', answered)
redis.register_function('disp_failed', failed)
redis.register_function('disp_release', release)
redis.register_function('disp_set_state', set_state)
redis.register_function('disp_snapshot', snapshot)
redis.register_function('disp_sweep', sweep_expired)
redis.register_function('disp_token_set', token_set)
redis.register_function('disp_voicemail_put', voicemail_put)
redis.register_function('disp_voicemail_update', voicemail_update)
redis.register_function('disp_voicemail_expire', voicemail_expire)
redis.register_function('disp_prompt_put', prompt_put)
redis.register_function('disp_registration', registration)
redis.register_function('disp_names_put', names_put)
redis.register_function('disp_credential_put', credential_put)
redis.register_function('disp_tenant_delete', tenant_delete)
redis.register_function('disp_node_beat', node_beat)
redis.register_function('disp_queue_join', queue_join)
redis.register_function('disp_queue_leave', queue_leave)
redis.register_function('disp_queue_keep', queue_keep)
