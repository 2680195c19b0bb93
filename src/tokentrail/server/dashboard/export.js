// Export: download the current range as FOCUS 1.2 / CSV / Parquet (GET /api/v1/export with the
// page's key). A plain link could not carry the key header, so the file is fetched and saved.
"use strict";
(() => {
  const button = $("export-download"), note = $("export-note");
  if (!button) return;
  button.addEventListener("click", async () => {
    const fmt = $("export-format").value;
    const query = ["format=" + encodeURIComponent(fmt), rangeQuery(), "tz=" + encodeURIComponent(TZ)].filter(Boolean);
    button.disabled = true;
    note.textContent = "preparing…";
    try {
      const headers = key() ? {"X-Tokentrail-Key": key()} : {};
      const r = await fetch("/api/v1/export?" + query.join("&"), {headers});
      if (!r.ok) {
        let message = r.statusText;
        try { const body = await r.json(); message = body.error ? body.error.message : message; } catch (e) { /* not JSON */ }
        throw new Error(message);
      }
      const blob = await r.blob();
      const named = /filename="([^"]+)"/.exec(r.headers.get("Content-Disposition") || "");
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = named ? named[1] : "tokentrail-export";
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 60e3);
      note.textContent = `downloaded ${a.download} (${num(blob.size)} bytes)`;
      note.dataset.done = "true";
    } catch (e) {
      note.textContent = "export failed: " + e.message;
    } finally {
      button.disabled = false;
    }
  });
})();
