// The dashboard's month-end forecast: spend so far this month, the projection to its end with
// the 80 % band (GET /api/v1/forecast), and each budget's projected exhaustion under its bar.
"use strict";

function shortDay(iso) { const [, m, d] = String(iso).split("-"); return `${MONTHS[Number(m) - 1]} ${Number(d)}`; }

// Under a budget's bar: when it runs out at the forecast rate ("" when it has no forecast).
function exhaustionHtml(b) {
  const p = b.projected_exhaustion;
  if (!p) return "";
  if (!p.date) return `<div class="sub" data-exhaustion="none" title="projected ${esc(money(p.projected_usd))} by the period end (80 %: ${esc(money(p.low_usd))}–${esc(money(p.high_usd))})">not exhausted this period</div>`;
  const band = p.earliest === p.latest ? "" : ` (${shortDay(p.earliest)}–${p.latest ? shortDay(p.latest) : "later"})`;
  return `<div class="sub exhausts" data-exhaustion="${esc(p.date)}" title="80 % band${esc(band)}">runs out ~${esc(shortDay(p.date))}${esc(band)}</div>`;
}

// The projected fraction of the limit at the period end: a lighter bar behind the used one.
function projectedWidth(b) {
  const p = b.projected_exhaustion;
  if (!p || b.limit_usd == null || !(Number(b.limit_usd) > 0)) return 0;
  return Math.min(100, Math.max(0, Math.round(Number(p.projected_usd) / Number(b.limit_usd) * 100)));
}

function forecastFailed(e) { $("forecast-note").textContent = ""; $("forecast").innerHTML = `<text x="50%" y="50%" text-anchor="middle">could not load: ${esc(e.message)}</text>`; }

function forecastPanel(data) {
  const f = (data.forecasts || [])[0], svg = $("forecast");
  if (!f || (Number(f.projected_usd) === 0 && Number(f.spent_usd) === 0)) {
    $("forecast-note").textContent = "";
    svg.innerHTML = `<text x="50%" y="50%" text-anchor="middle">no spend to forecast yet</text>`;
    delete svg.dataset.projected;
    return;
  }
  const last = f.days.length ? f.days[f.days.length - 1].day : f.period_end;  // the period's last day
  $("forecast-note").innerHTML = `${moneyHtml(f.projected_usd)} projected by the end of ${esc(shortDay(last))} ` +
    `(80 %: ${moneyHtml(f.low_usd)}–${moneyHtml(f.high_usd)}) · ${moneyHtml(f.spent_usd)} so far`;
  svg.dataset.projected = f.projected_usd;
  // cumulative spend: what was seen, then the forecast with its band
  let cum = 0;
  const seen = [[0, 0], ...f.spent_days.map((d, i) => [i + 1, (cum += Number(d.usd))])];
  const start = seen.length - 1;
  const ahead = f.days.map((d, i) => ({x: start + i + 1, e: Number(d.expected_usd), lo: Number(d.low_usd), hi: Number(d.high_usd)}));
  const total = start + ahead.length, top = Math.max(cum, ...ahead.map((a) => a.hi), 1e-9);
  const w = svg.clientWidth || 600, h = svg.clientHeight || 160, L = 56, R = 12, T = 10, B = 22;
  const X = (x) => L + (w - L - R) * x / Math.max(total, 1), Y = (v) => T + (h - T - B) * (1 - v / top);
  const pts = (a) => a.map(([x, v]) => `${X(x).toFixed(1)},${Y(v).toFixed(1)}`).join(" ");
  const band = ahead.length ? pts([[start, cum], ...ahead.map((a) => [a.x, a.hi])]) + " " + pts([...ahead.map((a) => [a.x, a.lo]).reverse(), [start, cum]]) : "";
  const line = ahead.length ? pts([[start, cum], ...ahead.map((a) => [a.x, a.e])]) : "";
  const ticks = [0, top / 2, top].map((v) => `<line class="grid" x1="${L}" x2="${w - R}" y1="${Y(v)}" y2="${Y(v)}"/><text x="${L - 6}" y="${Y(v) + 4}" text-anchor="end">${esc(money(v.toFixed(2)))}</text>`).join("");
  svg.innerHTML = ticks +
    (band ? `<polygon class="band" points="${band}"><title>80 % band</title></polygon>` : "") +
    `<polyline class="seen" points="${pts(seen)}"><title>spent</title></polyline>` +
    (line ? `<polyline class="projected" points="${line}"><title>projected</title></polyline>` : "") +
    `<text x="${L}" y="${h - 6}">${esc(shortDay(f.period_start))}</text><text x="${w - R}" y="${h - 6}" text-anchor="end">${esc(shortDay(last))}</text>`;
}
