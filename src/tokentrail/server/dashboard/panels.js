// The dashboard's budgets, sessions (paged, filtered), session view and alerts; loading, auto-refresh.
"use strict";
// -- budgets, sessions, alerts ------------------------------------------------------------------

function budgetState(b) {
  if (b.locked || b.blocked_until) {
    const until = b.blocked_until ? "until " + when(b.blocked_until) : b.period === "session" ? "until the session ends" : "until the period ends";
    return [`<span class="badge bad" data-state="locked">locked</span>`, `an overage blocks calls ${until}`];
  }
  const resets = b.period_end ? "resets " + when(b.period_end) : b.period === "session" ? "per session" : "";
  if (b.used >= 1) {
    if (b.action === "block") return [`<span class="badge bad" data-state="full">limit reached</span>`, "calls are refused · " + resets];
    return [`<span class="badge warn" data-state="over">over limit</span>`, `action: ${b.action} · ${resets}`];
  }
  if (b.used >= 0.8) return [`<span class="badge warn" data-state="near">near limit</span>`, resets];
  return [`<span class="badge" data-state="ok">ok</span>`, resets];
}

function amount(usd, tokens, b, places) {
  const parts = [];
  if (b.limit_usd != null) parts.push(moneyHtml(usd, places));
  if (b.limit_tokens != null) parts.push(`${num(tokens)} tok`);
  return parts.join("<br>") || "—";
}

function budgets(data) {
  const list = data.budgets || [], susp = data.suspensions || [];
  $("suspensions").innerHTML = susp.map((s) => `<div class="banner" data-suspended="${esc(s.scope)}"><b>Suspended:</b> every call of ` +
    `<code>${esc(s.scope)}</code> is refused${s.reason ? " (" + esc(s.reason) + ")" : ""}${s.since ? " since " + esc(when(s.since)) : ""}</div>`).join("");
  const locked = list.filter((b) => b.locked || b.blocked_until).length, full = list.filter((b) => !(b.locked || b.blocked_until) && b.used >= 1).length;
  $("budget-flags").innerHTML = (locked ? `<span class="badge bad">${locked} locked</span> ` : "") + (full ? `<span class="badge warn">${full} at limit</span>` : "");
  const priced = list.filter((b) => b.limit_usd != null);
  const [pp, pr, pl, pm] = ["posted_usd", "reserved_usd", "limit_usd", "remaining_usd"].map((k) => placesOf(priced.map((b) => b[k])));
  table($("budgets"), [["budget"], ["used"], ["spent", "num"], ["reserved", "num opt"], ["limit", "num"], ["remaining", "num"], ["state"]], list.map((b) => {
    const pct = Math.round(b.used * 100), cls = b.used >= 1 ? "bad" : b.used >= 0.8 ? "warn" : "";
    const [badge, note] = budgetState(b);
    const scope = [b.scope, b.period, b.action].filter(Boolean).join(" · ");
    return `<tr data-budget="${esc(b.budget)}"><td class="name" title="${esc(b.budget)} (${esc(scope)})"><b>${esc(b.budget)}</b><div class="sub">${esc(scope)}</div></td>` +
      `<td><span class="bar" title="${pct}%"><s style="width:${projectedWidth(b)}%"></s><i class="${cls}" style="width:${Math.min(100, Math.max(0, pct))}%"></i></span>${pct}%${exhaustionHtml(b)}</td>` +
      `<td class="num">${amount(b.posted_usd, b.posted_tokens, b, pp)}</td><td class="num opt">${amount(b.reserved_usd, b.reserved_tokens, b, pr)}</td>` +
      `<td class="num">${amount(b.limit_usd, b.limit_tokens, b, pl)}</td><td class="num">${amount(b.remaining_usd, b.remaining_tokens, b, pm)}</td>` +
      `<td class="span2 note">${badge}<div class="sub">${esc(note)}</div></td></tr>`;
  }), "no budgets: set one with `tokentrail budget set`");
}

function sessions(list) {
  const places = placesOf(list.filter((x) => !isUnpriced({...x, tool_runs: x.tool_calls})).map((x) => x.cost_usd));
  table($("sessions"), [["session"], ["agent"], ["team", "opt"], ["started"], ["calls", "num"], ["tools", "num opt"], ["tokens", "num"], ["cost", "num"]],
    list.map((s) => `<tr><td class="span2"><a class="sid" href="#session" data-session="${esc(s.session_id)}" title="${esc(s.session_id)}">${esc(s.session_id)}</a></td>` +
      `<td class="name" title="${esc(s.agent)}">${esc(s.agent)}</td><td class="opt">${esc(s.team)}</td><td>${esc(when(s.started))}</td>` +
      `<td class="num">${num(s.calls)}</td><td class="num opt">${num(s.tool_calls)}</td><td class="num">${num(s.tokens)}</td>` +
      `<td class="num cost">${costHtml({...s, tool_runs: s.tool_calls}, places)}</td></tr>`),
    sessionQuery().filtered ? "no sessions match these filters" : "no sessions in this range");
}

// The sessions list pages through the API (SESSIONS_PAGE at a time) with its own filters.
const SESSIONS_PAGE = 20;
let sessionOffset = 0, sessionGen = 0;

function sessionQuery() {
  const parts = [], since = $("f-since").value;
  if (since === "") { const q = rangeQuery(); if (q) parts.push(q); } else if (since !== "all") parts.push("since=" + encodeURIComponent(since));
  let filtered = since !== "";
  for (const dim of ["agent", "team", "customer"]) {
    const v = $("f-" + dim).value.trim();
    if (v) { parts.push(dim + "=" + encodeURIComponent(v)); filtered = true; }
  }
  return {text: parts.join("&"), filtered};
}

async function loadSessions() {
  const gen = ++sessionGen, box = $("sessions-box");
  box.setAttribute("aria-busy", "true");
  try {
    const r = await api(`/api/v1/sessions?limit=${SESSIONS_PAGE}&offset=${sessionOffset}&${sessionQuery().text}`);
    if (gen !== sessionGen) return;
    if (!r.sessions.length && sessionOffset > 0) { sessionOffset = 0; return loadSessions(); }  // the list shrank
    sessions(r.sessions);
    const first = r.sessions.length ? sessionOffset + 1 : 0;
    $("s-page").textContent = r.sessions.length ? `${num(first)}–${num(sessionOffset + r.sessions.length)}` : "";
    $("s-prev").disabled = sessionOffset === 0;
    $("s-next").disabled = !r.more;
  } catch (e) {
    if (gen !== sessionGen) return;
    failed($("sessions"), e);
    $("s-page").textContent = ""; $("s-next").disabled = true; $("s-prev").disabled = sessionOffset === 0;
    throw e;
  } finally {
    if (gen === sessionGen) box.setAttribute("aria-busy", "false");
  }
}

function options(el, values) {  // a filter's suggestions
  el.innerHTML = [...new Set(values.filter((v) => v != null && v !== ""))].sort().map((v) => `<option value="${esc(v)}">`).join("");
}

function alertList(list) {
  table($("alerts"), [["when"], ["budget", "opt"], ["message"]], list.map((a) =>
    `<tr><td>${esc(when(a.ts))}</td><td class="opt">${esc(a.budget)}</td><td class="msg">${esc(a.message)}</td></tr>`), "no alerts in this range");
}

let openSession = null;  // the session shown below the list (auto-refresh reloads it too)

function took(a, b) {
  const sec = Math.max(0, (Date.parse(b) - Date.parse(a)) / 1000);
  if (sec < 60) return sec.toFixed(1) + "s";
  if (sec < 3600) return `${Math.floor(sec / 60)}m${String(Math.floor(sec % 60)).padStart(2, "0")}s`;
  return `${Math.floor(sec / 3600)}h${String(Math.floor(sec % 3600 / 60)).padStart(2, "0")}m`;
}

function clock(iso) {  // HH:MM:SS, the viewer's time
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((x) => String(x).padStart(2, "0")).join(":");
}

// One session: what `tokentrail session ID` shows (times, tokens in/out/cached, context growth,
// cost, latency, status), as a table of its call tree.
async function showSession(id) {
  const s = await api("/api/v1/sessions/" + encodeURIComponent(id));
  openSession = id;
  const t = s.totals;
  $("session-box").hidden = false;
  $("session-title").textContent = `Session ${s.session_id} · ${s.agent || "?"} · ${isUnpriced(t) ? "unpriced" : money(t.cost_usd)}`;
  const meta = [`${when(s.started)} → ${when(s.ended)} (took ${took(s.started, s.ended)})`,
    ...[s.team && "team " + s.team, s.user && "user " + s.user].filter(Boolean),
    `${num(t.calls)} calls`, `${num(t.input_tokens)} in`, `${num(t.output_tokens)} out`, `${num(t.cache_read_tokens)} cached`];
  if (t.reasoning_tokens) meta.push(`${num(t.reasoning_tokens)} reasoning`);
  let html = meta.map(esc).join(" · ") + " · " + (isUnpriced(t) ? '<span class="unpriced">unpriced</span>' : moneyHtml(t.cost_usd));
  if (t.unpriced_calls) html += ` · <span class="unpriced">${num(t.unpriced_calls)} unpriced</span>`;
  if (t.errors) html += ` · <span class="err">${num(t.errors)} errors</span>`;
  const outcomes = Object.entries(s.outcomes || {});
  if (outcomes.length) html += "<br>outcomes: " + esc(outcomes.map(([n, c]) => c === 1 ? n : `${n}×${c}`).join(", "));
  $("session-meta").innerHTML = html;
  const nodes = [];
  const walk = (list, depth) => list.forEach((n) => { nodes.push([n, depth]); walk(n.children, depth + 1); });
  walk(s.tree, 0);
  // a model call with no price is "unpriced" (its node's cost would read 0); a tool run's is "—"
  const cost = (n) => {
    const e = n.event;
    if (e && (e.kind === "llm" || e.kind === "embedding") && noPrice(e.cost_usd) && !n.children.length) return null;
    return e && e.kind === "tool" && noPrice(e.cost_usd) && !n.children.length ? "—" : n.cost_usd;
  };
  const places = placesOf(nodes.map(([n]) => cost(n)).filter((c) => c !== "—"));
  const rows = nodes.map(([n, depth]) => {
    const e = n.event || {}, c = cost(n), model = n.kind === "llm" || n.kind === "embedding";
    const costCell = c === "—" ? '<span class="muted">—</span>' : noPrice(c) ? '<span class="unpriced">unpriced</span>' : moneyHtml(c, places);
    const status = !n.event ? "" : e.status === "ok" ? '<span class="muted">ok</span>' : `<span class="err">${esc(e.status)}</span>`;
    return `<tr data-kind="${esc(n.kind)}"><td class="muted">${n.event ? esc(clock(e.ts)) : ""}</td>` +
      `<td class="name" style="padding-left:${8 + depth * 18}px" title="${esc(n.name)}">${esc(n.kind)}: ${esc(n.name)}</td>` +
      `<td class="num">${model ? num(e.input_tokens) : ""}</td>` +
      `<td class="num growth">${n.context_growth == null ? "" : esc(signed(n.context_growth))}</td>` +
      `<td class="num">${model ? num(e.output_tokens) : ""}</td><td class="num">${model ? num(e.cache_read_tokens) : ""}</td>` +
      `<td class="num cost">${costCell}</td>` +
      `<td class="num opt">${e.latency_ms == null ? "" : num(Math.round(e.latency_ms)) + " ms"}</td><td>${status}</td></tr>`;
  });
  table($("session"), [["time"], ["call"], ["in", "num"], ["context growth", "num"], ["out", "num"], ["cached", "num"],
    ["cost", "num"], ["latency", "num opt"], ["status"]], rows);
}

// -- loading --------------------------------------------------------------------------------------

let generation = 0;

async function load() {
  const gen = ++generation, current = () => gen === generation;
  $("error").textContent = "";
  $("status").className = "loading"; $("status").textContent = "loading";
  document.querySelector("main").setAttribute("aria-busy", "true");
  delete document.body.dataset.loaded;
  const done = (ok, message) => {
    if (!current()) return;
    $("status").className = ""; $("status").textContent = ok ? "updated " + when(new Date().toISOString(), false) : "";
    if (!ok) $("error").textContent = message;
    document.querySelector("main").setAttribute("aria-busy", "false");
    document.body.dataset.loaded = ok ? "true" : "error";
  };
  let me;
  try { me = await api("/api/v1/me"); } catch (e) { if (current()) unloaded(e); done(false, e.message); return; }
  if (!current()) return;
  $("who").textContent = me.auth_required ? `${me.role}${me.team ? " · team " + me.team : " · all teams"}` : "auth off";
  const q = rangeQuery(), dim = $("group").value;
  // Each panel shows itself as soon as its own data is in: a slow query never blanks the page.
  const panel = (fn, render, onError) => fn().then((data) => { if (current()) render(data); },
    (e) => { if (current()) onError(e); throw e; });
  const results = await Promise.allSettled([
    panel(() => api(`/api/v1/report?by=team&${q}`), (r) => { totals(r.totals, r.rows); groupTable($("by-team"), "team", r); options($("teams"), r.rows.map((x) => x.team)); }, (e) => failed($("by-team"), e)),
    panel(() => api(`/api/v1/report?by=agent&${q}`), (r) => { groupTable($("by-agent"), "agent", r); options($("agents"), r.rows.map((x) => x.agent)); }, (e) => failed($("by-agent"), e)),
    panel(() => api(`/api/v1/report?by=customer&${q}`), (r) => options($("customers"), r.rows.map((x) => x.customer)), () => {}),
    panel(() => api(`/api/v1/report?by=model&${q}`), (r) => groupTable($("by-model"), "model", r), (e) => failed($("by-model"), e)),
    panel(() => loadChart(q, dim), (c) => { chart = c; drawChart(); }, (e) => { chart = {empty: "could not load: " + e.message}; drawChart(); }),
    loadSessions(),
    ...(openSession ? [showSession(openSession).catch((e) => { if (/no session/.test(e.message)) { openSession = null; $("session-box").hidden = true; } else throw e; })] : []),
    panel(() => api("/api/v1/budgets"), budgets, (e) => failed($("budgets"), e)),
    panel(() => api(`/api/v1/forecast?tz=${encodeURIComponent(TZ)}`).catch((e) => /tz/i.test(e.message) ? api("/api/v1/forecast") : Promise.reject(e)), forecastPanel, forecastFailed),
    panel(() => api(`/api/v1/alerts?limit=20&${q}`), (r) => alertList(r.alerts), (e) => failed($("alerts"), e)),
  ]);
  const bad = results.find((r) => r.status === "rejected");
  done(!bad, bad ? bad.reason.message : "");
}

let drawnWidth = 0;  // redraw the chart when its width changes (a window resized, a scroll bar shown)
new ResizeObserver(() => { const w = $("chart").clientWidth; if (w !== drawnWidth) { drawnWidth = w; drawChart(); } }).observe($("chart"));
$("range").addEventListener("change", () => { sessionOffset = 0; load(); });
$("group").addEventListener("change", load);
$("refresh").addEventListener("click", load);
$("save").addEventListener("click", () => { localStorage.setItem("tokentrail-key", $("key").value.trim()); $("keybox").hidden = true; load(); });
$("session-close").addEventListener("click", (ev) => { ev.preventDefault(); $("session-box").hidden = true; openSession = null; });
$("sessions").addEventListener("click", (ev) => {
  const id = ev.target.dataset && ev.target.dataset.session;
  if (!id) return;
  ev.preventDefault();
  showSession(id).then(() => $("session-box").scrollIntoView({block: "nearest"}), (e) => { $("error").textContent = e.message; });
});
// the sessions' filters and pages reload the list alone (typing waits for a pause)
const sessionsAgain = () => loadSessions().catch(() => {});
let typing = 0;
for (const id of ["f-agent", "f-team", "f-customer"]) {
  $(id).addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(() => { sessionOffset = 0; sessionsAgain(); }, 300); });
  $(id).addEventListener("change", () => { clearTimeout(typing); sessionOffset = 0; sessionsAgain(); });
}
$("f-since").addEventListener("change", () => { sessionOffset = 0; sessionsAgain(); });
$("s-next").addEventListener("click", () => { sessionOffset += SESSIONS_PAGE; sessionsAgain(); });
$("s-prev").addEventListener("click", () => { sessionOffset = Math.max(0, sessionOffset - SESSIONS_PAGE); sessionsAgain(); });
// optional auto-refresh (remembered in this browser); a hidden tab skips its turn
let autoTimer = 0;
function autoRefresh() {
  clearInterval(autoTimer);
  const sec = Number($("auto").value);
  localStorage.setItem("tokentrail-auto", String(sec));
  if (sec > 0) autoTimer = setInterval(() => { if (!document.hidden) load(); }, sec * 1000);
}
$("auto").value = localStorage.getItem("tokentrail-auto") || "0";
if ($("auto").selectedIndex < 0) $("auto").value = "0";
$("auto").addEventListener("change", autoRefresh);
autoRefresh();
load();
