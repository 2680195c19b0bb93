// The anomalies panel: what the detectors found (GET /api/v1/anomalies), newest first, scoped by the key.
"use strict";
async function loadAnomalies() {
  const el = $("anomalies");
  try {
    const r = await api(`/api/v1/anomalies?limit=20&${rangeQuery()}`);
    table(el, [["when"], ["kind"], ["agent", "opt"], ["message"]], r.anomalies.map((a) =>
      `<tr><td>${esc(when(a.ts))}</td><td>${esc(a.kind)}</td><td class="opt">${esc(a.agent)}</td><td class="msg">${esc(a.message)}</td></tr>`),
      "no anomalies in this range");
  } catch (e) {
    failed(el, e);
  }
}
for (const id of ["refresh", "save"]) $(id).addEventListener("click", loadAnomalies);
$("range").addEventListener("change", loadAnomalies);
loadAnomalies();
