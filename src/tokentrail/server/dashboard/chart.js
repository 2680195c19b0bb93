// The dashboard's spend-over-time chart (SVG), by hour or by day in the viewer's time zone.
"use strict";
// -- spend over time ----------------------------------------------------------------------------

let chart = null;  // what drawChart() draws: {bucket, tz, slots, groups, values} or {empty}

function dayKey(ms, tz) {  // YYYY-MM-DD of an instant in a time zone
  try { return new Intl.DateTimeFormat("en-CA", {timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit"}).format(ms); }
  catch (e) { return new Date(ms).toISOString().slice(0, 10); }
}
function hourOf(ms, tz) {
  try { return Number(new Intl.DateTimeFormat("en-GB", {timeZone: tz, hour: "2-digit", hourCycle: "h23"}).format(ms)); }
  catch (e) { return new Date(ms).getUTCHours(); }
}
function dayLabel(key) { const [, m, d] = key.split("-"); return `${MONTHS[Number(m) - 1]} ${Number(d)}`; }
function nextDay(key) { const [y, m, d] = key.split("-").map(Number); return new Date(Date.UTC(y, m - 1, d + 1)).toISOString().slice(0, 10); }

async function loadChart(q, dim) {
  let tz = TZ, daily;
  try {
    daily = await api(`/api/v1/report?by=day,${dim}&${q}&tz=${encodeURIComponent(tz)}`);
  } catch (e) {
    if (tz === "UTC" || !/tz/i.test(e.message)) throw e;
    tz = "UTC";  // a server without this zone: days in UTC
    daily = await api(`/api/v1/report?by=day,${dim}&${q}`);
  }
  if (!daily.rows.length) return {empty: "no calls in this range"};
  const now = Date.now(), first = Math.min(...daily.rows.map((r) => Date.parse(r.day)));
  if (now - first <= 2 * DAY) {  // two days or less: by hour
    const hourly = await api(`/api/v1/report?by=hour,${dim}&${q}&tz=${encodeURIComponent(tz)}`);
    return series(hourly, dim, "hour", tz, now);
  }
  return series(daily, dim, "day", tz, now);
}

function series(report, dim, bucket, tz, now) {
  const rows = report.rows;
  if (!rows.length) return {empty: "no calls in this range"};
  const slots = [], index = new Map();
  if (bucket === "hour") {
    const ms = rows.map((r) => Date.parse(r.hour)), first = Math.min(...ms), last = Math.max(...ms);
    const end = first + Math.floor((Math.max(now, last) - first) / HOUR) * HOUR;
    let start = Math.min(first, end - 23 * HOUR);  // at least a day of hours, for context
    if (report.since) { const s = Date.parse(report.since); start = Math.max(start, first - Math.floor((first - s) / HOUR) * HOUR); }
    for (let t = start; t <= end; t += HOUR) {
      const h = hourOf(t, tz), day = dayKey(t, tz);
      index.set(t, slots.length);
      slots.push({label: String(h).padStart(2, "0") + ":00", hour: h, date: dayLabel(day),
                  title: `${dayLabel(day)}, ${String(h).padStart(2, "0")}:00–${String((h + 1) % 24).padStart(2, "0")}:00`});
    }
  } else {
    const keys = rows.map((r) => r.day.slice(0, 10)).sort();
    let end = keys[keys.length - 1]; const today = dayKey(now, tz);
    if (today > end) end = today;
    for (let k = keys[0]; k <= end; k = nextDay(k)) { index.set(k, slots.length); slots.push({label: dayLabel(k), title: dayLabel(k)}); }
  }
  const spent = new Map(), sums = new Map(), priced = new Set();
  for (const r of rows) {
    const g = label(r, dim), c = Number(r.cost_usd) || 0;
    if (!isUnpriced(r)) priced.add(g);
    spent.set(g, (spent.get(g) || 0) + Math.abs(c));
    sums.set(g, (sums.get(g) || 0) + c);
  }
  let groups = [...spent.keys()].sort((a, b) => spent.get(b) - spent.get(a));
  const kept = new Set(groups.length > COLORS.length ? groups.slice(0, COLORS.length - 1) : groups);
  if (groups.length > kept.size) groups = [...kept, "other"];
  const values = slots.map(() => ({}));
  for (const r of rows) {
    const i = index.get(bucket === "hour" ? Date.parse(r.hour) : r.day.slice(0, 10));
    if (i === undefined) continue;
    const g = kept.has(label(r, dim)) ? label(r, dim) : "other";
    values[i][g] = (values[i][g] || 0) + (Number(r.cost_usd) || 0);
  }
  const unpriced = rows.reduce((a, r) => a + (r.unpriced_calls || 0), 0);
  // a group none of whose calls has a price totals "unpriced" (null), never $0
  const members = (g) => g === "other" ? [...sums.keys()].filter((k) => !kept.has(k)) : [g];
  const total = (g) => members(g).some((k) => priced.has(k)) ? members(g).reduce((a, k) => a + sums.get(k), 0) : null;
  return {bucket, tz, slots, groups, values, unpriced, totals: groups.map(total)};
}

function niceTicks(lo, hi, target = 5) {
  const raw = (hi - lo) / target, mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw * 0.999);
  const ticks = [];
  for (let v = Math.floor(lo / step + 1e-9) * step; v <= Math.ceil(hi / step - 1e-9) * step + step / 2; v += step) ticks.push(Number(v.toPrecision(12)));
  return {ticks, step};
}

function tickLabel(v, step) {
  if (v === 0) return "$0";
  const d = step >= 1 ? 0 : Math.max(2, Math.ceil(-Math.log10(step) - 1e-9));
  return (v < 0 ? "-" : "") + "$" + Math.abs(v).toLocaleString("en-US", {minimumFractionDigits: d, maximumFractionDigits: d});
}

function drawChart() {
  const svg = $("chart"), W = svg.clientWidth || 800, H = 240;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  delete svg.dataset.bucket;
  if (!chart || chart.empty) {
    svg.innerHTML = `<text x="${W / 2}" y="${H / 2}" text-anchor="middle">${esc(chart ? chart.empty : "loading…")}</text>`;
    $("legend").innerHTML = ""; $("chart-note").textContent = "";
    return;
  }
  const {slots, groups, values, bucket} = chart;
  const color = (g) => COLORS[groups.indexOf(g) % COLORS.length];
  const pos = values.map((v) => Object.values(v).filter((x) => x > 0).reduce((a, x) => a + x, 0));
  const neg = values.map((v) => Object.values(v).filter((x) => x < 0).reduce((a, x) => a + x, 0));
  const lo = Math.min(0, ...neg), hi = Math.max(0, ...pos);
  $("chart-note").textContent = `by ${bucket} · ${chart.tz}`;
  $("legend").innerHTML = groups.map((g, j) => `<span title="${esc(g)}: ${esc(money(chart.totals[j]))} in this range">` +
    `<i style="background:${color(g)}"></i>${esc(g)} <small class="${noPrice(chart.totals[j]) ? "unpriced" : "muted"}">${moneyHtml(chart.totals[j])}</small></span>`).join("");
  if (hi === lo) {
    const why = chart.unpriced ? `nothing priced in this range: ${num(chart.unpriced)} call(s) have no price` : "nothing spent in this range";
    svg.innerHTML = `<text x="${W / 2}" y="${H / 2}" text-anchor="middle">${esc(why)}</text>`;
    return;
  }
  const {ticks, step} = niceTicks(lo, hi), labels = ticks.map((t) => tickLabel(t, step));
  const yMin = ticks[0], yMax = ticks[ticks.length - 1];
  const left = 14 + Math.max(...labels.map((l) => l.length)) * 6.6, right = 6, top = 8, bottom = 34;
  const pw = W - left - right, ph = H - top - bottom, y = (v) => top + (yMax - v) / (yMax - yMin) * ph;
  const n = slots.length, sw = pw / n, bw = Math.max(1, Math.min(sw * 0.78, 64));
  let out = "";
  ticks.forEach((t, i) => {
    out += `<line class="grid" x1="${left}" x2="${W - right}" y1="${y(t)}" y2="${y(t)}"/>` +
      `<text class="y-tick" data-value="${t}" x="${left - 6}" y="${y(t) + 4}" text-anchor="end">${esc(labels[i])}</text>`;
  });
  const every = bucket === "hour" ? [1, 2, 3, 4, 6, 12, 24].find((k) => n / k <= pw / 48) || 24
                                  : [1, 2, 7, 14, 28, 56, 91, 182, 364].find((k) => n / k <= pw / 56) || 364;
  slots.forEach((s, i) => {
    const x0 = left + i * sw, x = x0 + (sw - bw) / 2, v = values[i];
    const lines = groups.filter((g) => v[g]).map((g) => `${g}: ${money(v[g])}`);
    const total = Object.values(v).reduce((a, c) => a + c, 0);
    out += `<rect class="slot" x="${x0}" y="${top}" width="${sw}" height="${ph}" fill="transparent"><title>${esc(s.title)}\n${esc(lines.join("\n") || "no spend")}${lines.length > 1 ? esc("\ntotal: " + money(total)) : ""}</title></rect>`;
    let up = 0, down = 0;
    groups.forEach((g) => {
      const c = v[g] || 0;
      if (!c) return;
      const from = c > 0 ? up : down, to = from + c;
      if (c > 0) up = to; else down = to;
      const y1 = y(Math.max(from, to)), h = Math.max(0.75, Math.abs(y(from) - y(to)));
      out += `<rect class="bar-seg" data-slot="${i}" x="${x}" y="${y1}" width="${bw}" height="${h}" fill="${color(g)}"><title>${esc(g)} · ${esc(s.title)}: ${esc(money(c))}</title></rect>`;
    });
    const labelled = bucket === "hour" ? s.hour % every === 0 : (n - 1 - i) % every === 0;
    if (labelled) {
      out += `<text class="x-tick" x="${x0 + sw / 2}" y="${H - bottom + 15}" text-anchor="middle">${esc(s.label)}</text>`;
      if (bucket === "hour" && (s.hour < every || i === 0)) out += `<text x="${x0 + sw / 2}" y="${H - bottom + 29}" text-anchor="middle">${esc(s.date)}</text>`;
    }
  });
  out += `<line class="axis" x1="${left}" x2="${W - right}" y1="${y(0)}" y2="${y(0)}"/>`;
  svg.innerHTML = out;
  Object.assign(svg.dataset, {bucket, slots: n, plotLeft: left, plotRight: left + pw});
}
