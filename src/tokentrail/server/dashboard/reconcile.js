// The reconciliation panel: the latest runs of `tokentrail reconcile` against the providers'
// bills, with their coverage. Org-wide spend: shown to keys of no team only (a team key's 403
// keeps the panel hidden). Loads on its own, with the page and on every refresh.
"use strict";

const VERDICT_LABELS = {missing_from_ledger: "missing from ledger", missing_from_provider: "missing from provider",
  token_mismatch: "token mismatch", price_drift: "price drift"};

function coverageHtml(c) {
  if (c == null) return '<span class="muted">n/a</span>';
  const pct = Number(c) * 100, cls = pct >= 99 ? "" : pct >= 90 ? "warn" : "bad";
  return `<span class="badge ${cls}" data-coverage="${esc(c)}">${esc(pct.toFixed(2))}%</span>`;
}

function differencesHtml(v) {
  const parts = Object.entries(VERDICT_LABELS).filter(([k]) => v[k] > 0).map(([k, label]) => `${num(v[k])} ${label}`);
  return parts.length ? `<span class="unpriced">${esc(parts.join(" · "))}</span>` : '<span class="muted">none</span>';
}

function reconciliations(list) {
  const day = (iso) => String(iso || "").slice(0, 10);
  const last = (iso) => day(new Date(new Date(iso).getTime() - DAY).toISOString());
  const places = placesOf(list.flatMap((r) => [r.provider_cost_usd, r.ledger_cost_usd]));
  table($("reconciliations"), [["provider"], ["days"], ["coverage", "num"], ["provider spend", "num"], ["ledger spend", "num"],
    ["differences"], ["run", "opt"]], list.map((r) =>
    `<tr data-run="${esc(r.run_id)}"><td class="name">${esc(r.provider)}</td><td>${esc(day(r.since))} → ${esc(last(r.until))}</td>` +
    `<td class="num">${coverageHtml(r.coverage)}</td>` +
    `<td class="num">${r.provider_cost_usd == null ? '<span class="muted">n/a</span>' : moneyHtml(r.provider_cost_usd, places)}</td>` +
    `<td class="num">${moneyHtml(r.ledger_cost_usd, places)}</td><td>${differencesHtml(r.verdicts || {})}</td>` +
    `<td class="opt">${esc(when(r.created))}</td></tr>`), "no reconciliation yet: run tokentrail reconcile");
}

async function loadReconciliations() {
  const box = $("reconcile-box");
  try {
    const data = await api("/api/v1/reconciliations?limit=20");
    box.hidden = data.runs.length === 0;
    reconciliations(data.runs);
  } catch (e) {
    box.hidden = true;  // a team key (403), or nothing readable: the rest of the page says why
  }
  box.dataset.loaded = "true";
}

$("refresh").addEventListener("click", loadReconciliations);
loadReconciliations();
