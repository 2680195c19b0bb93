// The dashboard's shared pieces: formatting (money by one rule), the API, tables, totals.
"use strict";
const COLORS = ["#3b6fd8", "#2a9d8f", "#e9a23b", "#c23b3b", "#8e5bd0", "#5c8a3a", "#d0609a", "#8a93a3"];
const HOUR = 3600e3, DAY = 86400e3, MONTHS = ["Jan","Feb","Mar","Apr","May","Jun","Jul","Aug","Sep","Oct","Nov","Dec"];
const TZ = (() => { try { return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC"; } catch (e) { return "UTC"; } })();
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c]));
const num = (v) => Number(v || 0).toLocaleString("en-US");
const signed = (v) => (v > 0 ? "+" : "") + num(v);  // a change: +1,234 or -178, as the CLI shows it

// Money, one rule everywhere (the CLI's too): an amount on its own shows 2 decimals from $1;
// below, up to 6 significant digits (trailing zeros dropped, at least 2 decimals), so a non-zero
// amount never shows as "$0.00"; the sign before the "$". In a column (or a total over rows) every
// amount shows as many decimals as the row that needs the most, so the column lines up and a
// total is never rounded to cents when its rows need more. null (or "None") is a cost nobody
// could price: "unpriced", never $0.
const noPrice = (v) => v == null || v === "" || v === "None";

function decimals(v) {  // how many decimals money(v) shows on its own
  const a = Math.abs(Number(v));
  if (noPrice(v) || !Number.isFinite(a) || a === 0 || a >= 1) return 2;
  const frac = Number(a.toPrecision(6)).toLocaleString("en-US", {maximumFractionDigits: 20}).split(".")[1] || "";
  return Math.max(2, frac.length);
}

function money(v, places = 0) {
  if (noPrice(v)) return "unpriced";
  const n = Number(v);
  if (!Number.isFinite(n)) return String(v);
  const a = Math.abs(n), d = Math.max(places, decimals(v));
  const text = a.toLocaleString("en-US", {minimumFractionDigits: d, maximumFractionDigits: d});
  return (/[1-9]/.test(text) && n < 0 ? "-" : "") + "$" + text;
}

// The decimals a column of amounts shows: enough for every one of them.
const placesOf = (values) => values.reduce((d, v) => noPrice(v) ? d : Math.max(d, decimals(v)), 2);

// An amount in a page: HTML that never wraps mid-number.
const moneyHtml = (v, places = 0) => `<span class="money">${esc(money(v, places))}</span>`;

// Whether a row of measures has no price at all: every call unpriced and nothing else spent (the
// reports layer says so with cost_usd null; older servers sent "0" with unpriced_calls == calls).
function isUnpriced(r) {
  const c = r.cost_usd;
  if (c == null || c === "None") return true;
  return r.calls > 0 && r.unpriced_calls === r.calls && !(r.tool_runs > 0) && Number(c) === 0;
}

function costHtml(r, places = 0) {
  if (isUnpriced(r)) return `<span class="unpriced" title="${num(r.unpriced_calls)} call(s) with no price">unpriced</span>`;
  let out = moneyHtml(r.cost_usd, places);
  if (r.unpriced_calls > 0) out += `<div class="sub unpriced" title="calls with no price are not in this cost">+${num(r.unpriced_calls)} unpriced</div>`;
  return out;
}

function when(iso, withDate = true) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const hm = String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
  return withDate ? `${MONTHS[d.getMonth()]} ${d.getDate()}, ${hm}` : hm;
}

function key() { return localStorage.getItem("tokentrail-key") || ""; }

async function api(path) {
  const headers = key() ? {"X-Tokentrail-Key": key()} : {};
  const r = await fetch(path, {headers});
  if (r.status === 401) { $("keybox").hidden = false; throw new Error("this server needs a tokentrail key with the read role"); }
  let body;
  try { body = await r.json(); } catch (e) { throw new Error(`${path}: ${r.status} ${r.statusText}`); }
  if (!r.ok) throw new Error(body.error ? body.error.message : r.statusText);
  return body;
}

function rangeQuery() { const s = $("range").value; return s ? "since=" + encodeURIComponent(s) : ""; }

function table(el, head, rows, empty = "nothing yet") {
  el.innerHTML = "<thead><tr>" + head.map(([h, cls]) => `<th class="${cls || ""}">${esc(h)}</th>`).join("") +
    "</tr></thead><tbody>" + (rows.length ? rows.join("") : `<tr><td class="muted" colspan="${head.length}">${esc(empty)}</td></tr>`) + "</tbody>";
  for (const tr of el.tBodies[0].rows) {  // each value's label, for the narrow (card) layout
    if (tr.cells.length === head.length) [...tr.cells].forEach((td, i) => { td.dataset.label = head[i][0]; });
  }
}

function unloaded(e) {  // nothing could be read (no key, say): no panel stays "loading"
  for (const card of $("totals").children) { const b = card.querySelector("b"); b.className = ""; b.textContent = "—"; }
  for (const td of document.querySelectorAll("main td.loading")) { td.className = "muted"; td.textContent = "not loaded"; }
  chart = {empty: "not loaded: " + e.message}; drawChart();
  for (const el of document.querySelectorAll("main .loading")) { el.classList.remove("loading"); el.textContent = "not loaded"; }  // any other panel
}

function failed(el, e) { el.innerHTML = `<tbody><tr><td class="unpriced">could not load: ${esc(e.message)}</td></tr></tbody>`; }

// -- totals and the three group tables ----------------------------------------------------------

function label(r, dim) {
  const v = r[dim];
  if (v != null && v !== "") return String(v);
  return r.calls === 0 && r.tool_runs > 0 ? "(tool runs)" : "(none)";
}

function groupTable(el, dim, report) {
  const tools = report.rows.some((r) => r.tool_runs > 0);
  const places = placesOf(report.rows.filter((r) => !isUnpriced(r)).map((r) => r.cost_usd));
  const head = [[dim], ["calls", "num"], ...(tools ? [["tools", "num opt"]] : []), ["tokens", "num"], ["cost", "num"]];
  table(el, head, report.rows.map((r) => {
    const name = label(r, dim);
    return `<tr><td class="name" title="${esc(name)}">${esc(name)}</td><td class="num">${num(r.calls)}</td>` +
      (tools ? `<td class="num opt">${num(r.tool_runs)}</td>` : "") +
      `<td class="num">${num(r.input_tokens + r.output_tokens)}</td><td class="num cost">${costHtml(r, places)}</td></tr>`;
  }), "no calls in this range");
}

function totals(t, rows) {
  const places = placesOf(rows.filter((r) => !isUnpriced(r)).map((r) => r.cost_usd));
  const cards = {
    "cost": [isUnpriced(t) ? "unpriced" : money(t.cost_usd, places), isUnpriced(t) ? "warn" : ""],
    "calls": [num(t.calls), ""],
    "tool runs": [num(t.tool_runs), ""],
    "tokens": [num(t.input_tokens + t.output_tokens), ""],
    "unpriced calls": [num(t.unpriced_calls), t.unpriced_calls > 0 ? "warn" : ""],
    "errors": [num(t.errors), t.errors > 0 ? "bad" : ""],
  };
  for (const card of $("totals").children) {
    const [text, cls] = cards[card.dataset.total] || ["", ""];
    card.className = "card " + cls;
    const b = card.querySelector("b");
    b.className = ""; b.textContent = text; b.title = text;
  }
}
