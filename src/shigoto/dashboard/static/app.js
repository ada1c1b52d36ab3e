// shigoto dashboard: live regions, confirmations and charts. No dependencies.
// Text from the server is only ever inserted as parsed, server-escaped HTML (live
// regions) or as textContent (charts), never built into markup here.
"use strict";

(function () {
  const body = document.body;
  const pollMs = Number(body.dataset.pollMs || 2000);
  const indicator = document.getElementById("live-indicator");
  const SVG = "http://www.w3.org/2000/svg";

  // -- confirmations --------------------------------------------------------------
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form instanceof HTMLFormElement && form.dataset.confirm) {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    }
  });

  // -- live regions: re-fetch this page, swap every [data-live] element by id ---------
  let busy = false;
  async function refresh() {
    const regions = document.querySelectorAll("[data-live][id]");
    if (!regions.length || busy || document.hidden) return;
    const focused = document.activeElement;
    if (focused && focused.closest("[data-live]") && focused.matches("input, select, textarea")) return;
    busy = true;
    try {
      const response = await fetch(window.location.href, {
        credentials: "same-origin",
        headers: { "X-Shigoto-Live": "1" },
      });
      if (!response.ok || response.redirected) throw new Error("HTTP " + response.status);
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const region of regions) {
        const next = fresh.getElementById(region.id);
        if (next && next.innerHTML !== region.innerHTML) {
          region.replaceWith(document.importNode(next, true));
        }
      }
      if (indicator) indicator.classList.remove("off");
    } catch (error) {
      if (indicator) indicator.classList.add("off");
    } finally {
      busy = false;
    }
  }
  setInterval(refresh, pollMs);

  // -- charts: completions (bars), failed attempts (red bars), failure rate (line) ----
  function el(name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function draw(figure, data) {
    const width = 360, height = 120, pad = 22;
    const done = data.completed, failed = data.failed, rate = data.failure_rate;
    const n = done.length;
    const peak = Math.max(1, ...done.map((d, i) => d + failed[i]));
    const bar = (width - pad * 2) / n;
    const y = (v) => height - pad - (v / peak) * (height - pad * 2);
    const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", class: "chart-svg" });
    svg.appendChild(el("title", {}, `${figure.dataset.name}: completions and failures per minute`));
    svg.appendChild(el("line", { x1: pad, y1: height - pad, x2: width - pad, y2: height - pad, class: "axis" }));
    done.forEach((d, i) => {
      const x = pad + i * bar;
      if (d) svg.appendChild(el("rect", { x, y: y(d), width: Math.max(1, bar - 1), height: height - pad - y(d), class: "ok" }));
      if (failed[i]) {
        svg.appendChild(el("rect", { x, y: y(d + failed[i]), width: Math.max(1, bar - 1), height: y(d) - y(d + failed[i]), class: "fail" }));
      }
    });
    const points = [];
    rate.forEach((r, i) => {
      if (r !== null) points.push(`${pad + i * bar + bar / 2},${height - pad - (r / 100) * (height - pad * 2)}`);
    });
    if (points.length > 1) svg.appendChild(el("polyline", { points: points.join(" "), class: "rate" }));
    svg.appendChild(el("text", { x: pad, y: 12, class: "label" }, `peak ${peak}/min`));
    svg.appendChild(el("text", { x: pad, y: height - 6, class: "label" }, "-60 min"));
    svg.appendChild(el("text", { x: width - pad, y: height - 6, class: "label end" }, "now"));
    const totalDone = done.reduce((a, b) => a + b, 0);
    const totalFailed = failed.reduce((a, b) => a + b, 0);
    const share = totalDone + totalFailed ? ((100 * totalFailed) / (totalDone + totalFailed)).toFixed(1) : "0.0";
    const summary = document.createElement("p");
    summary.className = "chart-summary";
    summary.textContent = `${totalDone} completed · ${totalFailed} failed attempts · failure rate ${share}%`;
    const lines = [summary];
    const metrics = data.metrics;
    if (metrics && typeof metrics === "object") {
      const secs = (v) => (v < 1 ? `${Math.round(v * 1000)} ms` : `${v.toFixed(2)} s`);
      const shown = [
        ["throughput_per_min", "throughput", (v) => `${v.toFixed(1)}/min`],
        ["failure_rate", "failure rate", (v) => `${(v * 100).toFixed(1)}%`],
        ["processing_p50_s", "p50", secs],
        ["processing_p95_s", "p95", secs],
        ["delay_s", "delay", secs],
        ["backlog", "backlog", (v) => String(v)],
      ].filter(([key]) => typeof metrics[key] === "number");
      if (shown.length) {
        const line = document.createElement("p");
        line.className = "chart-summary chart-metrics";
        line.textContent = "last 5 min: " + shown.map(([key, label, fmt]) => `${label} ${fmt(metrics[key])}`).join(" · ");
        lines.push(line);
      }
    }
    figure.querySelectorAll("svg, .chart-summary").forEach((node) => node.remove());
    figure.appendChild(svg);
    for (const line of lines) figure.appendChild(line);
  }

  async function charts() {
    if (document.hidden) return;
    for (const figure of document.querySelectorAll("figure[data-chart]")) {
      try {
        const response = await fetch(figure.dataset.chart, { credentials: "same-origin" });
        if (!response.ok) continue;
        const data = await response.json();
        figure.dataset.name = data.queue;
        draw(figure, data);
      } catch (error) {
        /* the next round tries again */
      }
    }
  }
  if (document.querySelector("figure[data-chart]")) {
    charts();
    setInterval(charts, Math.max(3000, pollMs * 5));
  }
})();
