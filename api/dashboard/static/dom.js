// Small DOM and formatting helpers shared by the pages.

/** el("a", {href: "/x", class: "link"}, "text", child) */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function fmtNumber(value, digits = 4) {
  if (value === undefined || value === null || Number.isNaN(value)) return "–";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return String(value);
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e5)) return value.toExponential(2);
  return value.toPrecision(digits).replace(/(\.\d*?)0+$/, "$1").replace(/\.$/, "");
}

export function fmtValue(value) {
  if (typeof value === "number") return fmtNumber(value);
  if (value === undefined || value === null) return "–";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

export function fmtPercent(fraction) {
  if (fraction === undefined || fraction === null || Number.isNaN(fraction)) return "–";
  const sign = fraction > 0 ? "+" : "";
  return `${sign}${(fraction * 100).toFixed(1)}%`;
}

export function fmtDuration(seconds) {
  if (seconds === undefined || seconds === null) return "–";
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

export function fmtTime(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

export function badge(status) {
  return el("span", { class: `badge status-${status}` }, status);
}

/** A progress bar: complete and pruned count towards the target, running trials are drawn after them. */
export function progressBar(trials, target) {
  const done = (trials.complete || 0) + (trials.pruned || 0);
  const pct = (n) => `${Math.min(100, (100 * n) / Math.max(target, 1)).toFixed(1)}%`;
  const label = `${done} / ${target}` + (trials.running ? ` · ${trials.running} running` : "")
    + (trials.failed ? ` · ${trials.failed} failed` : "")
    + (trials.interrupted ? ` · ${trials.interrupted} interrupted` : "");
  return el(
    "div",
    { class: "progress", title: `${trials.complete || 0} complete, ${trials.pruned || 0} pruned` },
    el(
      "div",
      { class: "bar" },
      el("span", { class: "seg complete", style: `width:${pct(trials.complete || 0)}` }),
      el("span", { class: "seg pruned", style: `width:${pct(trials.pruned || 0)}` }),
      el("span", { class: "seg running", style: `width:${pct(trials.running || 0)}` }),
    ),
    el("span", { class: "label" }, label),
  );
}

/** A two-column table of key → value. */
export function kvTable(entries) {
  return el(
    "table",
    { class: "kv" },
    el("tbody", {}, entries.map(([key, value]) => el("tr", {}, el("th", {}, key), el("td", {}, value)))),
  );
}

export function showMessage(node, text, kind = "error") {
  node.textContent = text || "";
  node.className = `message ${text ? kind : ""}`;
}
