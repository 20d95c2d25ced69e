// The study page's summary cards: header and facts, best configuration, baseline vs best per task on validation data
// (the split that chose the best: optimistic; the held-out verdict is verdict.js's).

import { badge, el, fmtNumber, fmtPercent, fmtTime, kvTable, progressBar } from "./dom.js";
import { comparisonRows } from "./traces.js";

export const trialUrl = (name, number) =>
  `${document.body.dataset.home.replace(/\/$/, "")}/studies/${encodeURIComponent(name)}/trials/${number}`;

export function objectiveNames(study) {
  if (study.objective !== "pareto") return ["objective"];
  return study.tasks.map((t) => `${t.name} ${t.metric}`);
}

export function renderHeader(study) {
  document.getElementById("study-status").replaceWith(
    Object.assign(badge(study.status), { id: "study-status", title: study.last_error || "" }),
  );
  document.getElementById("progress").replaceChildren(progressBar(study.trials, study.n_trials));
  const facts = [
    ["problem", study.problem],
    ["tasks", study.tasks.map((t) => `${t.name} (${t.metric}, ${t.direction})`).join(", ")],
    ["objective", `${study.objective} (${study.directions.join(", ")})`],
    ["sampler", study.sampler],
    ["pruner", study.pruner || "–"],
    ["epochs", study.epochs],
    ["best value", study.objective === "scalar" ? fmtNumber(study.best_value) : `${study.best.length} Pareto trials`],
    ["created", fmtTime(study.created_at)],
    ["updated", fmtTime(study.updated_at)],
  ];
  if (Object.keys(study.problem_options || {}).length) {
    facts.splice(1, 0, ["options", JSON.stringify(study.problem_options)]);
  }
  if (study.last_error) facts.push(["last error", study.last_error]);
  document.getElementById("study-facts").replaceChildren(
    ...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]),
  );
}

function paramsTable(params) {
  const entries = Object.entries(params || {});
  if (!entries.length) return el("p", { class: "hint" }, "default configuration (no sampled parameters)");
  return kvTable(entries.map(([k, v]) => [k, typeof v === "number" ? fmtNumber(v) : String(v)]));
}

export function renderBest(study) {
  const target = document.getElementById("best");
  if (!study.best.length) {
    target.replaceChildren(el("p", { class: "hint" }, "no complete trial yet"));
    return;
  }
  if (study.objective === "pareto") {
    const names = objectiveNames(study);
    const head = el("tr", {}, el("th", {}, "trial"), names.map((n) => el("th", { class: "num" }, n)));
    const rows = study.best.map((t) =>
      el("tr", {}, el("td", {}, el("a", { href: trialUrl(study.name, t.number) }, `#${t.number}`)),
        (t.values || []).map((v) => el("td", { class: "num" }, fmtNumber(v)))));
    target.replaceChildren(
      el("p", { class: "hint" }, `${study.best.length} trials on the Pareto front`),
      el("div", { class: "table-scroll" },
        el("table", { class: "grid compact" }, el("thead", {}, head), el("tbody", {}, rows))),
    );
    return;
  }
  const best = study.best[0];
  target.replaceChildren(
    el("p", {}, el("a", { href: trialUrl(study.name, best.number) }, `trial #${best.number}`),
      ` · objective ${fmtNumber(best.objective)}`, best.baseline ? " · baseline" : ""),
    paramsTable(best.params),
  );
}

export function renderComparison(study) {
  const rows = comparisonRows(study.comparison, study.tasks);
  const target = document.getElementById("comparison");
  if (!rows.length) {
    const why = study.objective === "pareto"
      ? "a Pareto study has no single best trial"
      : "needs the baseline and a best trial";
    target.replaceChildren(el("p", { class: "hint" }, why));
    return;
  }
  const titles = ["task", "metric", "direction", "baseline (val)", "best (val)", "change (val)"];
  const head = el("tr", {}, titles.map((h, i) => el("th", { class: i >= 3 ? "num" : "" }, h)));
  // Plain numbers, not a headline: the best was chosen on this split, so its change here is biased upwards.
  const body = rows.map((r) => el("tr", { dataset: { task: r.task, better: r.better === null ? "" : String(r.better) } },
    el("td", {}, r.task), el("td", {}, r.metric), el("td", {}, r.direction || "–"),
    el("td", { class: "num" }, fmtNumber(r.baseline)), el("td", { class: "num" }, fmtNumber(r.best)),
    el("td", { class: "num", title: r.better === null ? "" : r.better ? "an improvement on validation data"
      : "a regression on validation data" }, fmtPercent(r.change))));
  const baseline = study.baseline
    ? el("p", { class: "hint" }, "baseline: ", el("a", { href: trialUrl(study.name, study.baseline.number) },
      `trial #${study.baseline.number}`), " (equal weights, default learning rates)")
    : null;
  const table = el("table", { class: "grid compact" }, el("thead", {}, head), el("tbody", {}, body));
  target.replaceChildren(el("div", { class: "table-scroll" }, table), baseline);
}
