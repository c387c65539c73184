// dispatcher live dashboard.
//
// Reads /v1/tenants/{t}/live (agents, groups, queued callers) and /calls (calls ringing and in
// progress) with the API token, and re-reads both (debounced) whenever the tenant's event
// stream (/events/stream, Server-Sent Events) reports something; the new voicemail per group
// (/voicemail) is read at the start and again when a message is recorded, marked or deleted.
// Durations, waits and wrap-up countdowns tick locally on the server's clock. The token is kept in sessionStorage (this tab only);
// EventSource cannot send it as a header, so each stream connection uses a one-time ticket
// obtained with it. Every value from the API is put in the page as text, never as HTML.
"use strict";

(() => {
  const TOKEN_KEY = "dispatcher.dashboard.token";
  const TENANT_KEY = "dispatcher.dashboard.tenant";
  const LAST_TENANT_KEY = "dispatcher.dashboard.lastTenant";
  const REFRESH_DEBOUNCE_MS = 100;
  const MAX_BACKOFF_MS = 15000;
  const ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
  // What an agent shows: the API's activity, except that an available agent whose phone is
  // not registered cannot take a call and shows as such.
  const ACTIVITIES = [
    "available", "on_call", "ringing", "wrapup", "paused", "logged_out", "not_registered",
  ];
  const LABEL = {
    available: "available",
    not_registered: "not registered",
    on_call: "on call",
    ringing: "ringing",
    wrapup: "wrap-up",
    paused: "paused",
    logged_out: "logged out",
    in_progress: "in progress",
    talking: "talking",
  };

  const $ = (id) => document.getElementById(id);

  const s = {
    tenant: null,
    token: null,
    live: null,
    calls: null,
    newVoicemail: {}, // group id -> unheard messages
    voicemailStale: true, // read /voicemail with the next refresh
    offsetMs: 0, // server clock - local clock
    es: null,
    lastId: null,
    heartbeatMs: 15000,
    watchdog: null,
    reconnectTimer: null,
    backoffMs: 1000,
    refreshTimer: null,
    inFlight: false,
    dirty: false,
    seenCalls: new Set(),
    callers: new Map(), // call-id -> caller, from the events (bounded)
    events: 0,
    generation: 0, // bumped on sign-out: late replies of an old session are dropped
  };

  class AuthError extends Error {}

  // --- small helpers ------------------------------------------------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = String(value);
      else if (key === "data") Object.assign(node.dataset, value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const serverNow = () => Date.now() + s.offsetMs;

  function duration(ms) {
    const total = Math.max(0, Math.floor(ms / 1000));
    const h = Math.floor(total / 3600);
    const m = Math.floor((total % 3600) / 60);
    const sec = String(total % 60).padStart(2, "0");
    return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
  }

  function clockText(ms) {
    return new Date(ms).toLocaleTimeString([], { hour12: false });
  }

  function tenantPath(suffix) {
    return `v1/tenants/${encodeURIComponent(s.tenant)}/${suffix}`;
  }

  async function api(path, options = {}) {
    const reply = await fetch(path, {
      ...options,
      cache: "no-store",
      headers: { Authorization: `Bearer ${s.token}`, Accept: "application/json" },
    });
    if (reply.status === 401) throw new AuthError("The token was not accepted.");
    if (reply.status === 403) throw new AuthError("This token is not for this tenant.");
    if (reply.status === 404) throw new AuthError(`Tenant “${s.tenant}” does not exist.`);
    if (!reply.ok) throw new Error(`${path}: HTTP ${reply.status}`);
    return reply.json();
  }

  function setConn(state, text) {
    $("conn").dataset.state = state;
    $("conn-text").textContent = text;
  }

  // --- sign in and out ----------------------------------------------------------------

  function showLogin(message) {
    $("board").hidden = true;
    $("signout").hidden = true;
    $("login").hidden = false;
    $("tenant-label").textContent = "";
    $("login-error").textContent = message || "";
    $("login-tenant").value = s.tenant || localStorage.getItem(LAST_TENANT_KEY) || "";
    setConn("idle", "not connected");
    (s.tenant ? $("login-token") : $("login-tenant")).focus();
  }

  function signOut(message) {
    s.generation += 1;
    disconnect();
    sessionStorage.removeItem(TOKEN_KEY);
    s.token = null;
    s.live = s.calls = null;
    s.newVoicemail = {};
    s.voicemailStale = true;
    s.lastId = null;
    s.seenCalls.clear();
    showLogin(message);
  }

  function signIn(tenant, token) {
    s.tenant = tenant;
    s.token = token;
    s.lastId = null; // a new session streams from now on
    s.voicemailStale = true;
    s.seenCalls.clear();
    sessionStorage.setItem(TENANT_KEY, tenant);
    sessionStorage.setItem(TOKEN_KEY, token);
    localStorage.setItem(LAST_TENANT_KEY, tenant); // not secret; fills the form next time
    $("login").hidden = true;
    $("board").hidden = false;
    $("signout").hidden = false;
    $("tenant-label").replaceChildren("tenant ", el("b", { text: tenant }));
    scheduleRefresh(0);
    connect();
  }

  // A link may carry "#tenant=...&token=..." (a fragment never reaches a server); it is
  // moved to sessionStorage and removed from the address bar and history at once.
  function takeFragment() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    if (!fragment.has("token")) return false;
    sessionStorage.setItem(TOKEN_KEY, fragment.get("token"));
    if (fragment.has("tenant")) sessionStorage.setItem(TENANT_KEY, fragment.get("tenant"));
    history.replaceState(null, "", location.pathname + location.search);
    return true;
  }

  function boot() {
    takeFragment();
    const query = new URLSearchParams(location.search);
    s.tenant = query.get("tenant") || sessionStorage.getItem(TENANT_KEY);
    const token = sessionStorage.getItem(TOKEN_KEY);
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const tenant = $("login-tenant").value.trim();
      const secret = $("login-token").value.trim();
      if (!ID.test(tenant)) {
        $("login-error").textContent = "A tenant id: letters, digits, _ . - (up to 64).";
        return;
      }
      $("login-token").value = "";
      signIn(tenant, secret);
    });
    $("signout").addEventListener("click", () => signOut(""));
    window.addEventListener("hashchange", () => {
      if (!takeFragment()) return;
      const tenant = sessionStorage.getItem(TENANT_KEY);
      s.generation += 1;
      disconnect();
      if (tenant && ID.test(tenant)) signIn(tenant, sessionStorage.getItem(TOKEN_KEY));
    });
    setInterval(tick, 250);
    tick();
    if (s.tenant && ID.test(s.tenant) && token) signIn(s.tenant, token);
    else showLogin("");
  }

  // --- the event stream ---------------------------------------------------------------

  function disconnect() {
    clearTimeout(s.watchdog);
    clearTimeout(s.reconnectTimer);
    if (s.es) s.es.close();
    s.es = null;
  }

  function kickWatchdog() {
    clearTimeout(s.watchdog);
    // two heartbeats missed: the connection is dead even if the browser has not noticed
    s.watchdog = setTimeout(() => reconnect("no heartbeat"), 2 * s.heartbeatMs + 5000);
  }

  function reconnect(why) {
    disconnect();
    setConn("reconnecting", `reconnecting… (${why})`);
    s.reconnectTimer = setTimeout(connect, s.backoffMs);
    s.backoffMs = Math.min(MAX_BACKOFF_MS, s.backoffMs * 2);
  }

  async function connect() {
    disconnect();
    const generation = s.generation;
    setConn(s.lastId ? "reconnecting" : "connecting", "connecting…");
    let ticket;
    try {
      ticket = (await api(tenantPath("events/ticket"), { method: "POST" })).ticket;
    } catch (error) {
      if (generation !== s.generation) return;
      if (error instanceof AuthError) signOut(error.message);
      else reconnect("API unreachable");
      return;
    }
    if (generation !== s.generation) return;
    const params = new URLSearchParams({ ticket });
    if (s.lastId) params.set("last_event_id", s.lastId);
    const es = new EventSource(`${tenantPath("events/stream")}?${params}`);
    s.es = es;
    kickWatchdog();
    es.addEventListener("ready", (event) => {
      const data = JSON.parse(event.data);
      s.heartbeatMs = (data.heartbeat_s || 15) * 1000;
      s.lastId = s.lastId || data.last_id;
      s.backoffMs = 1000;
      setConn("live", "live");
      kickWatchdog();
      scheduleRefresh(0); // whatever happened while (re)connecting
    });
    es.addEventListener("ping", kickWatchdog);
    es.addEventListener("message", (event) => {
      kickWatchdog();
      s.lastId = event.lastEventId || s.lastId;
      onEvent(JSON.parse(event.data));
    });
    es.addEventListener("revoked", () => signOut("The token was revoked."));
    es.addEventListener("unavailable", () => reconnect("Redis unavailable"));
    es.addEventListener("error", () => {
      // The ticket was for one connection: EventSource's own retry would be refused, so a
      // new ticket is fetched instead (resuming after the last event seen).
      if (s.es === es) reconnect("connection lost");
    });
  }

  function onEvent(event) {
    s.events += 1;
    if (event.call && event.caller) {
      s.callers.set(event.call, event.caller);
      if (s.callers.size > 500) s.callers.delete(s.callers.keys().next().value);
    }
    const when = Number(event.ts);
    $("footer-event").textContent =
      `last event: ${event.type}` + (when ? ` at ${clockText(when)}` : "") +
      ` · ${s.events} since the page opened`;
    // a message recorded, or marked or deleted (their audit events name the message)
    if (event.type === "voicemail" || (event.type === "audit" && event.voicemail)) {
      s.voicemailStale = true;
      scheduleRefresh(REFRESH_DEBOUNCE_MS);
    } else if (event.type !== "audit") {
      scheduleRefresh(REFRESH_DEBOUNCE_MS);
    }
  }

  // --- reading the state --------------------------------------------------------------

  function scheduleRefresh(delay) {
    if (s.refreshTimer !== null) return; // one refresh covers every event until it runs
    s.refreshTimer = setTimeout(refresh, delay);
  }

  async function refresh() {
    s.refreshTimer = null;
    if (!s.token) return;
    if (s.inFlight) {
      s.dirty = true;
      return;
    }
    s.inFlight = true;
    const generation = s.generation;
    try {
      const sent = Date.now();
      const readVoicemail = s.voicemailStale;
      s.voicemailStale = false;
      const [live, calls, voicemail] = await Promise.all([
        api(tenantPath("live")),
        api(tenantPath("calls")),
        // only the counts are used: one message is the least the API lists
        readVoicemail ? api(tenantPath("voicemail?heard=false&limit=1")) : null,
      ]).catch((error) => {
        if (readVoicemail) s.voicemailStale = true; // read again with the next refresh
        throw error;
      });
      if (generation !== s.generation) return;
      s.offsetMs = calls.now_ms - (sent + Date.now()) / 2;
      s.live = live;
      s.calls = calls;
      if (voicemail) s.newVoicemail = voicemail.new_by_group;
      render();
      if (s.es && s.es.readyState === EventSource.OPEN) setConn("live", "live");
    } catch (error) {
      if (generation !== s.generation) return;
      if (error instanceof AuthError) signOut(error.message);
      else setConn("offline", "API unreachable");
    } finally {
      s.inFlight = false;
      if (s.dirty) {
        s.dirty = false;
        scheduleRefresh(REFRESH_DEBOUNCE_MS);
      }
    }
  }

  // --- rendering ----------------------------------------------------------------------

  // What an agent shows now: a wrap-up that ended since the read shows as available, an
  // available agent without a registered phone as not registered (registered is null for an
  // agent with static URIs: those ring whether or not a phone registered).
  function activityOf(agent) {
    let activity = agent.activity;
    if (activity === "wrapup" && serverNow() >= agent.wrapup_until_ms) activity = "available";
    if (activity === "available" && agent.registered === false) return "not_registered";
    return activity;
  }

  function render() {
    const agents = new Map(s.live.agents.map((a) => [a.agent, a]));
    const groups = new Map(s.live.groups.map((g) => [g.id, g]));
    renderSummary();
    renderCalls(agents, groups);
    renderGroups(agents);
    $("footer-version").textContent = `config version ${s.live.version}`;
    tick();
  }

  function renderSummary() {
    const counts = Object.fromEntries(ACTIVITIES.map((a) => [a, 0]));
    for (const agent of s.live.agents) counts[activityOf(agent)] += 1;
    const ringing = s.calls.calls.filter((c) => c.state === "ringing").length;
    const talking = s.calls.calls.length - ringing;
    const waiting = s.live.groups.reduce((n, g) => n + g.queue_length, 0);
    const joined = s.live.groups.flatMap((g) => g.queued.map((q) => q.joined_ms));
    const newMessages = Object.values(s.newVoicemail).reduce((n, c) => n + c, 0);
    const stat = (n, label, key, swatch) =>
      el("div", { class: "stat", data: { stat: key } },
        n instanceof Node ? el("div", { class: "n" }, n) : el("div", { class: "n", text: n }),
        el("div", { class: "l" },
          swatch ? el("span", { class: `swatch sw-${swatch}` }) : null, label));
    const block = (title, ...stats) =>
      el("div", { class: "stat-group" },
        el("div", { class: "stat-title", text: title }),
        el("div", { class: "stats" }, ...stats));
    $("summary").replaceChildren(
      block("Calls",
        stat(s.calls.calls.length, "total", "calls"),
        stat(ringing, "ringing", "calls-ringing", "ringing"),
        stat(talking, "in progress", "calls-in-progress", "on_call")),
      block("Queue",
        stat(waiting, "waiting", "queue-waiting", "ringing"),
        stat(joined.length ? el("span", { data: { since: Math.min(...joined) } }) : "—",
          "longest wait", "queue-longest")),
      block("Voicemail", stat(newMessages, "new", "voicemail-new", "on_call")),
      block(`Agents (${s.live.agents.length})`,
        ...ACTIVITIES.map((a) => stat(counts[a], LABEL[a], `agents-${a}`, a))),
    );
  }

  function callerOf(call) {
    const caller = call.caller || s.callers.get(call.call);
    return caller ? el("span", { text: caller }) : el("span", { class: "unknown", text: "unknown" });
  }

  function renderCalls(agents, groups) {
    const rows = [];
    const current = new Set();
    for (const call of s.calls.calls) {
      current.add(call.call);
      const group = groups.get(call.group);
      const legs = call.legs.map((leg) => {
        const who = agents.get(leg.agent);
        const name = who ? who.name : leg.agent;
        return el("span", { class: `leg s-${leg.state}`, title: `${leg.agent}: ${LABEL[leg.state]}` },
          name,
          leg.state === "ringing" && leg.deadline_ms
            ? el("span", { class: "left", data: { until: leg.deadline_ms, suffix: " left" } })
            : null);
      });
      const talking = call.state === "in_progress";
      const since = talking ? call.answered_ms : call.started_ms;
      const durationCell = el("td", { class: "num duration" },
        since ? el("span", { data: { since } })
          : el("span", { class: "unknown", text: "—" }),
        talking && call.started_ms && call.answered_ms > call.started_ms
          ? el("span", { class: "sub", text: `waited ${duration(call.answered_ms - call.started_ms)}` })
          : el("span", { class: "sub", text: talking ? "talking" : "ringing" }));
      rows.push(el("tr", {
        class: s.seenCalls.has(call.call) ? "" : "new",
        data: { call: call.call, state: call.state },
      },
        el("td", {}, el("span", { class: `badge s-${call.state}`, text: LABEL[call.state] })),
        el("td", {}, callerOf(call)),
        el("td", {}, group ? group.name : el("span", { class: "unknown", text: call.group || "unknown" }),
          group ? el("span", { class: "ext", text: group.extension }) : null),
        el("td", {}, el("div", { class: "legs" }, ...legs)),
        durationCell,
        el("td", { class: "callid", title: call.call, text: call.call }),
      ));
    }
    s.seenCalls = current;
    $("calls-body").replaceChildren(...rows);
    $("calls").hidden = rows.length === 0;
    $("calls-empty").hidden = rows.length > 0;
    const n = s.calls.calls.length;
    $("calls-count").textContent = n === 0 ? "" : n === 1 ? "1 call" : `${n} calls`;
  }

  function agentRow(agent) {
    const activity = activityOf(agent);
    let note = null;
    if (agent.status === "paused" && agent.reason) note = agent.reason;
    if (activity === "ringing" && agent.ringing > 1) note = `${agent.ringing} offers ringing`;
    const load = el("span", {
      class: agent.live_calls > 0 ? "load on" : "load",
      title: "live calls / max calls",
      text: `${agent.live_calls}/${agent.max_calls}`,
    });
    const wrap = activity === "wrapup"
      ? el("span", { class: "agent-note", data: { until: agent.wrapup_until_ms, prefix: "wrap-up " } })
      : null;
    return el("li", {
      class: "agent",
      data: { agent: agent.agent, activity, live: agent.live_calls },
    },
      el("span", { class: "agent-name", title: agent.agent },
        agent.name, el("span", { class: "id", text: agent.agent }),
        note ? el("span", { class: "agent-note", text: note }) : null, wrap),
      el("span", { class: `badge s-${activity}`, text: LABEL[activity] || activity }),
      load);
  }

  function queueRow(entry) {
    return el("li", { class: "queued", data: { call: entry.call, state: entry.state } },
      el("span", { class: "pos", title: "position in the queue", text: entry.position }),
      el("span", { class: "queued-caller" },
        entry.caller ? entry.caller : el("span", { class: "unknown", text: "unknown" }),
        entry.priority > 0
          ? el("span", { class: "prio", title: "priority (0-9)", text: `P${entry.priority}` })
          : null,
        entry.state !== "waiting"
          ? el("span", { class: "agent-note", text: entry.state === "ringing" ? "ringing an agent" : "an agent is free" })
          : null),
      el("span", { class: "wait", title: "waited so far", data: { since: entry.joined_ms } }));
  }

  function renderGroups(agents) {
    const cards = s.live.groups.map((group) => {
      const members = group.members.map((id) => agents.get(id)).filter(Boolean);
      // the longest call's start from the calls read (ms), else from the group's counters (s)
      const starts = s.calls.calls
        .filter((c) => c.group === group.id && c.answered_ms)
        .map((c) => c.answered_ms);
      const oldest = starts.length
        ? Math.min(...starts)
        : group.live_calls ? s.live.now_ms - group.longest_call_s * 1000 : null;
      const newMessages = s.newVoicemail[group.id] || 0;
      const oldestWait = group.queued.length
        ? Math.min(...group.queued.map((q) => q.joined_ms)) : null;
      return el("article", {
        class: group.live_calls ? "group busy" : "group",
        data: { group: group.id, queued: group.queue_length, voicemail: newMessages },
      },
        el("div", { class: "group-head" },
          el("span", { class: "group-name", text: group.name }),
          el("span", { class: "group-ext", text: group.extension }),
          el("span", { class: "strategy", text: group.strategy.replaceAll("_", " ") })),
        el("div", { class: "group-stats" },
          el("span", {}, el("b", { text: group.live_calls }), " live"),
          oldest ? el("span", {}, "longest ", el("b", { data: { since: oldest } })) : null,
          el("span", { class: group.queue_length ? "waiting" : "" },
            el("b", { text: group.queue_length }), " queued"),
          oldestWait ? el("span", {}, "waiting ", el("b", { data: { since: oldestWait } })) : null,
          el("span", {}, el("b", {
            text: members.filter((a) => activityOf(a) === "available").length,
          }), ` of ${members.length} free`),
          newMessages
            ? el("span", { class: "vm", title: "new voicemail messages" },
              el("b", { text: newMessages }), " new voicemail")
            : null),
        group.queued.length
          ? el("ol", { class: "queue", title: "callers waiting, next first" },
            ...group.queued.map(queueRow))
          : null,
        members.length
          ? el("ul", { class: "agents" }, ...members.map(agentRow))
          : el("div", { class: "nomembers", text: "no members" }));
    });
    $("groups").replaceChildren(...cards);
    $("groups-count").textContent = `${s.live.groups.length} groups, ${s.live.agents.length} agents`;
    const loose = s.live.agents.filter((a) => a.groups.length === 0);
    $("loose").hidden = loose.length === 0;
    $("loose").replaceChildren(
      "Not in any group: ",
      ...loose.map((a) => el("span", { class: `badge s-${activityOf(a)}`, text: a.name })),
    );
  }

  // Durations count up from data-since, countdowns down to data-until, on the server's clock.
  function tick() {
    const now = serverNow();
    $("clock").textContent = clockText(now);
    for (const node of document.querySelectorAll("[data-since]")) {
      node.textContent = duration(now - Number(node.dataset.since));
    }
    let expired = false;
    for (const node of document.querySelectorAll("[data-until]")) {
      const left = Number(node.dataset.until) - now;
      if (left <= 0 && node.dataset.prefix) expired = true; // a wrap-up ended
      node.textContent =
        (node.dataset.prefix || "") + duration(left + 999) + (node.dataset.suffix || "");
    }
    // re-drawn once: the redrawn agent shows available and has no countdown any more
    if (expired && s.live) render();
  }

  document.addEventListener("DOMContentLoaded", boot);
})();
