// Unit economics (docs/metrics.md, computed by the server: GET /api/v1/economics) by agent and task
// type, the business-unit (org) view, and the agent tree of an opened session (GET /api/v1/trees/…).
"use strict";

const pct = (v) => v == null ? "–" : (100 * v).toFixed(1) + "%";
const ratio = (v) => v == null ? "–" : Number(v).toFixed(2);
const ms = (v) => v == null ? "–" : num(Math.round(v)) + " ms";
const per = (v, places) => v == null ? '<span class="muted">–</span>' : moneyHtml(v, places);

// the columns of both tables: [header, cell(row, places), css class]
const ECON_COLUMNS = [
  ["sessions", (r) => num(r.sessions), "num"],
  ["cost", (r) => costHtml({...r, tool_runs: 0}, ECON_PLACES.v), "num cost"],
  ["per session", (r) => per(r.avg_cost_per_session, ECON_PLACES.v), "num"],
  ["per call", (r) => per(r.avg_cost_per_call, ECON_PLACES.v), "num econ-opt"],
  ["outcomes", (r) => num(r.successful_outcomes) + (r.failed_outcomes ? ` <span class="err">(${num(r.failed_outcomes)} failed)</span>` : ""), "num"],
  ["per action", (r) => per(r.cost_per_action, ECON_PLACES.v), "num"],
  ["ROI", (r) => ratio(r.roi), "num"],
  ["token eff.", (r) => pct(r.token_efficiency), "num econ-opt"],
  ["cache hit", (r) => pct(r.cache_hit_rate), "num econ-opt"],
  ["out/in", (r) => ratio(r.output_input_ratio), "num econ-opt"],
  ["context p95", (r) => pct(r.context_utilisation_p95), "num econ-opt"],
  ["latency p50", (r) => ms(r.latency_p50), "num econ-opt"],
  ["latency p95", (r) => ms(r.latency_p95), "num econ-opt"],
];
const ECON_PLACES = {v: 2};

function econTable(el, dims, rep) {
  const all = [...rep.rows, rep.totals];
  ECON_PLACES.v = placesOf(all.flatMap((r) => [r.cost_usd, r.avg_cost_per_session, r.avg_cost_per_call, r.cost_per_action]));
  const head = [...dims.map((d) => [d]), ...ECON_COLUMNS.map(([h, , cls]) => [h, cls])];
  const row = (r, total) => `<tr${total ? ' class="total"' : ""}>` +
    dims.map((d, i) => {
      const v = total ? (i === 0 ? "total" : "") : (r[d] == null || r[d] === "" ? "(none)" : String(r[d]));
      return `<td class="name" title="${esc(v)}">${total ? `<b>${esc(v)}</b>` : esc(v)}</td>`;
    }).join("") +
    ECON_COLUMNS.map(([, cell, cls]) => `<td class="${cls}">${cell(r)}</td>`).join("") + "</tr>";
  const rows = rep.rows.map((r) => row(r, false));
  if (rep.rows.length) rows.push(row(rep.totals, true));
  table(el, head, rows, "no calls in this range");
}

async function loadEconomics() {
  const q = rangeQuery();
  const jobs = [
    api(`/api/v1/economics?by=agent,task_type&${q}`).then((r) => econTable($("econ-agents"), ["agent", "task_type"], r), (e) => failed($("econ-agents"), e)),
    api(`/api/v1/economics?by=org&${q}`).then((r) => econTable($("econ-orgs"), ["org"], r), (e) => failed($("econ-orgs"), e)),
  ];
  await Promise.all(jobs);
  document.body.dataset.economics = "loaded";
}

// The agent tree of a session: each session's own cost and its subtree's total; a click opens it.
async function showTree(id) {
  let tree;
  try { tree = await api("/api/v1/trees/" + encodeURIComponent(id)); } catch (e) { $("tree-box").hidden = true; return; }
  const nodes = [];
  const walk = (n, depth) => { nodes.push([n, depth]); n.children.forEach((c) => walk(c, depth + 1)); };
  walk(tree, 0);
  const places = placesOf(nodes.flatMap(([n]) => [n.cost_usd, n.total_cost_usd]));
  $("tree-box").hidden = false;
  $("tree-title").textContent = `Agent tree of ${tree.session_id} · ${nodes.length} session${nodes.length === 1 ? "" : "s"} · ${money(tree.total_cost_usd, places)}`;
  table($("tree"), [["session"], ["agent"], ["calls", "num"], ["own cost", "num"], ["total", "num"], ["total calls", "num opt"]],
    nodes.map(([n, depth]) => `<tr data-session="${esc(n.session_id)}" data-depth="${depth}">` +
      `<td class="name" style="padding-left:${8 + depth * 18}px"><a href="#session" data-tree-session="${esc(n.session_id)}">${esc(n.session_id)}</a></td>` +
      `<td>${esc(n.agent || "")}</td><td class="num">${num(n.calls)}</td>` +
      `<td class="num own">${moneyHtml(n.cost_usd, places)}</td><td class="num total">${moneyHtml(n.total_cost_usd, places)}</td>` +
      `<td class="num opt">${num(n.total_calls)}</td></tr>`));
  document.body.dataset.tree = tree.session_id;
}

$("sessions").addEventListener("click", (ev) => {
  const id = ev.target.dataset && ev.target.dataset.session;
  if (id) showTree(id);
});
$("tree").addEventListener("click", (ev) => {
  const id = ev.target.dataset && ev.target.dataset.treeSession;
  if (!id) return;
  ev.preventDefault();
  showSession(id).then(() => $("session-box").scrollIntoView({block: "nearest"}), (e) => { $("error").textContent = e.message; });
});
$("session-close").addEventListener("click", () => { $("tree-box").hidden = true; });
$("range").addEventListener("change", () => loadEconomics().catch(() => {}));
$("refresh").addEventListener("click", () => loadEconomics().catch(() => {}));
loadEconomics().catch(() => {});
