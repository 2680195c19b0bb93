// The savings advice panel: GET /api/v1/advice (the last 30 days, scoped by the key), best monthly
// saving first, each with its change, evidence and how the saving was computed; "Dismiss" posts
// /api/v1/advice/{id}/dismiss and the recommendation stays dismissed.
"use strict";

function adviceRow(r, i, places) {
  const ev = r.evidence || {};
  const who = (r.agent || "(no agent)") + (r.task_type ? ` (${r.task_type})` : "");
  const saving = r.enough_data ? moneyHtml(r.monthly_saving_usd, places) : '<span class="muted">not enough data</span>';
  const sessions = (ev.sessions || []).length ? ` · e.g. ${ev.sessions.join(", ")}` : "";
  return `<tr data-advice="${esc(r.id)}" data-kind="${esc(r.kind)}" data-agent="${esc(r.agent)}">` +
    `<td class="num">${i + 1}</td><td class="num" data-saving="${esc(r.monthly_saving_usd)}">${saving}</td>` +
    `<td class="name" title="${esc(who)}">${esc(who)}</td>` +
    `<td class="change"><b>${esc(r.title)}</b><div class="sub">${esc(r.change)}</div></td>` +
    `<td class="opt msg"><div>${esc(ev.metric)}: ${esc(ev.value)}${esc(sessions)}</div><div class="sub">${esc(r.formula)}</div></td>` +
    `<td><button class="dismiss" data-id="${esc(r.id)}">Dismiss</button></td></tr>`;
}

async function loadAdvice() {
  const el = $("advice");
  try {
    const data = await api("/api/v1/advice?since=30d");
    const recs = data.recommendations;
    const places = placesOf(recs.filter((r) => r.enough_data).map((r) => r.monthly_saving_usd));
    table(el, [["#", "num"], ["per month", "num"], ["agent"], ["change"], ["evidence and estimate", "opt"], [""]],
      recs.map((r, i) => adviceRow(r, i, places)), "no savings advice for the last 30 days");
    const notes = [data.dismissed ? `${data.dismissed} dismissed` : "",
      data.truncated ? `only the first ${num(data.events_read)} events were read` : ""];
    $("advice-note").textContent = notes.filter(Boolean).join(" · ");
  } catch (e) {
    failed(el, e);
  }
  $("advice-box").dataset.loaded = "true";
}

async function dismissAdvice(id) {
  const headers = {"Content-Type": "application/json", ...(key() ? {"X-Tokentrail-Key": key()} : {})};
  const r = await fetch(`/api/v1/advice/${encodeURIComponent(id)}/dismiss?since=30d`, {method: "POST", headers, body: "{}"});
  if (!r.ok) {
    let message = r.statusText;
    try { message = (await r.json()).error.message; } catch (e) { /* not JSON: keep the status text */ }
    $("advice-note").textContent = `could not dismiss: ${message}`;
    return;
  }
  await loadAdvice();
}

$("advice").addEventListener("click", (ev) => {
  const button = ev.target.closest("button.dismiss");
  if (button) { button.disabled = true; dismissAdvice(button.dataset.id); }
});
for (const id of ["refresh", "save"]) $(id).addEventListener("click", loadAdvice);
loadAdvice();
