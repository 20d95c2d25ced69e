// The study page's verdict: does tuning beat the default on held-out data (GET /studies/{name}/verdict), task by
// task, with each difference's 95 % interval over paired seeds; every confirmed configuration; and, when tuned static
// weighting was confirmed, which strategies it dominates. The functions above the rendering section only turn the
// verdict's JSON into rows, text and plotly traces, so they can be checked on their own.

import { el, fmtNumber } from "./dom.js";
import { draw } from "./plots.js";
import { color } from "./traces.js";

export const BUSY_STATUSES = ["pending", "running"];
export const isBusy = (verdict) => BUSY_STATUSES.includes(verdict?.status);

const isNum = (v) => typeof v === "number" && Number.isFinite(v);

/** ↑ for a metric that is maximised, ↓ for one that is minimised. */
export const arrow = (direction) => (direction === "maximize" ? "↑" : direction === "minimize" ? "↓" : "");

/** "12.3 ± 0.45" (the mean alone below two seeds; "–" without one). */
export function fmtMeanStd(numbers) {
  if (!numbers || !isNum(numbers.mean)) return "–";
  return isNum(numbers.std) ? `${fmtNumber(numbers.mean)} ± ${fmtNumber(numbers.std)}` : fmtNumber(numbers.mean);
}

const signed = (v) => (isNum(v) && v > 0 ? `+${fmtNumber(v)}` : fmtNumber(v));

/** "−2.17 [−3.33, −1.01]": the mean difference to the baseline with its 95 % interval. */
export function fmtDiff(diff) {
  if (!diff || !isNum(diff.mean)) return "–";
  if (!isNum(diff.low) || !isNum(diff.high)) return `${signed(diff.mean)} (no interval)`;
  return `${signed(diff.mean)} [${signed(diff.low)}, ${signed(diff.high)}]`;
}

/** The CSS class of a judgement: better in green, worse in red, the rest neutral. */
export const judgementClass = (judgement) =>
  judgement === "better" ? "better" : judgement === "worse" ? "worse" : "noise";

export const hasRole = (candidate, role) => (candidate.roles || []).includes(role);
export const baselineOf = (verdict) => (verdict.candidates || []).find((c) => hasRole(c, "baseline"));
export const bestOf = (verdict) => (verdict.candidates || []).find((c) => hasRole(c, "best"));

/** One row per task: the baseline and the best configuration, mean ± std over seeds, and the difference. */
export function verdictRows(verdict) {
  const baseline = baselineOf(verdict);
  const best = bestOf(verdict);
  if (!best) return [];
  return (verdict.tasks || []).map((t) => {
    const own = best.tasks?.[t.name];
    return {
      task: t.name, metric: t.metric, direction: t.direction, arrow: arrow(t.direction),
      baseline: fmtMeanStd(baseline?.tasks?.[t.name]), best: fmtMeanStd(own),
      baselineMean: baseline?.tasks?.[t.name]?.mean ?? null, bestMean: own?.mean ?? null,
      diff: fmtDiff(own?.diff), judgement: verdict.judgements?.[t.name] ?? own?.judgement ?? "–",
    };
  });
}

/** One row per confirmed configuration: the tasks where it beats the baseline and where it loses to it. */
export function candidateRows(verdict) {
  const tasks = (verdict.tasks || []).map((t) => t.name);
  return (verdict.candidates || []).map((c) => {
    const on = (judgement) => tasks.filter((t) => c.tasks?.[t]?.judgement === judgement);
    const baseline = hasRole(c, "baseline");
    return {
      trial: c.trial, roles: c.roles || [], strategy: c.strategy ?? "–", baseline,
      seeds: c.seeds.length, failed: (c.failed || []).length,
      better: baseline ? null : on("better"), worse: baseline ? null : on("worse"),
    };
  });
}

/** "3 of 6 runs complete · 2 running · 1 queued". */
export function progressText(verdict) {
  const r = verdict.runs || {};
  const total = (r.queued || 0) + (r.running || 0) + (r.complete || 0) + (r.failed || 0);
  if (!total) return "waiting for a worker to queue the runs";
  const parts = [`${r.complete || 0} of ${total} runs complete`];
  if (r.running) parts.push(`${r.running} running`);
  if (r.queued) parts.push(`${r.queued} queued`);
  if (r.failed) parts.push(`${r.failed} failed`);
  return parts.join(" · ");
}

const names = (list) => (list && list.length ? list.join(", ") : "none");

/** "tuned static weighting dominates: dwa, default; not dominated: uncertainty". */
export function dominanceLine(scalarization) {
  return `tuned static weighting dominates: ${names(scalarization.dominated)}; `
    + `not dominated: ${names(scalarization.not_dominated)}`;
}

/** How a configuration is named on the chart: "default" for the baseline, its strategy otherwise. */
export const pointLabel = (point) => ((point.roles || []).includes("baseline") ? "default" : point.strategy ?? "?");

/**
 * One pair of tasks: the tuned static weightings (those on their front joined by a line), and every other strategy's
 * confirmed best labelled by its strategy, hollow where a static weighting dominates it.
 */
export function scalarizationTraces(pair) {
  const hover = (rows, what) => rows.map((p) => `${what(p)} · trial ${p.trial}`);
  const front = pair.static.filter((p) => p.front).sort((a, b) => a.x - b.x);
  const behind = pair.static.filter((p) => !p.front);
  const traces = [
    {
      type: "scatter", mode: "lines+markers", name: "static (front)", x: front.map((p) => p.x),
      y: front.map((p) => p.y), text: hover(front, () => "static"), customdata: front.map((p) => p.trial),
      marker: { color: "#6b7280", size: 9, symbol: "square" }, line: { color: "#6b7280", dash: "dot" },
      hovertemplate: "%{text}<br>%{x:.4g}, %{y:.4g}<extra></extra>",
    },
  ];
  if (behind.length) {
    traces.push({
      type: "scatter", mode: "markers", name: "static (behind the front)", x: behind.map((p) => p.x),
      y: behind.map((p) => p.y), text: hover(behind, () => "static"), customdata: behind.map((p) => p.trial),
      marker: { color: "#9ca3af", size: 7, symbol: "square-open" },
      hovertemplate: "%{text}<br>%{x:.4g}, %{y:.4g}<extra></extra>",
    });
  }
  pair.others.forEach((p, i) => {
    const label = pointLabel(p);
    traces.push({
      type: "scatter", mode: "markers+text", name: p.dominated ? `${label} (dominated)` : label,
      x: [p.x], y: [p.y], text: [label], textposition: "top center", customdata: [p.trial],
      marker: {
        color: color(i), size: 11, symbol: p.dominated ? "circle-open" : "circle",
        line: { color: color(i), width: 2 },
      },
      hovertemplate: `${label} · trial ${p.trial}<br>%{x:.4g}, %{y:.4g}<extra></extra>`,
    });
  });
  return traces;
}

// --- rendering ---------------------------------------------------------------------------------------------

const byId = (id) => document.getElementById(id);
let pairIndex = 0;

/** "y1 rmse ↓" for an axis of the scalarization chart. */
function axisTitle(verdict, task) {
  const info = (verdict.tasks || []).find((t) => t.name === task);
  return info ? `${task} ${info.metric} ${arrow(info.direction)}` : task;
}

function headlineTable(verdict) {
  const rows = verdictRows(verdict);
  if (!rows.length) {
    const why = verdict.objective === "pareto"
      ? "a Pareto study has no single best configuration: each confirmed one is in the table below"
      : "no best configuration was confirmed";
    return el("p", { class: "hint" }, why);
  }
  const split = verdict.split || "test";
  const head = el("tr", {}, ["task", "metric", `baseline (${split})`, `best (${split})`,
    "difference [95 % interval]", "judgement"].map((h, i) => el("th", { class: i >= 2 && i <= 4 ? "num" : "" }, h)));
  const body = rows.map((r) => el("tr", { dataset: { task: r.task } },
    el("td", {}, r.task),
    el("td", { title: r.direction }, `${r.metric} ${r.arrow}`),
    el("td", { class: "num", dataset: { mean: r.baselineMean ?? "" } }, r.baseline),
    el("td", { class: "num", dataset: { mean: r.bestMean ?? "" } }, r.best),
    el("td", { class: "num" }, r.diff),
    el("td", { class: `judgement ${judgementClass(r.judgement)}` }, r.judgement)));
  return el("table", { class: "grid compact" }, el("thead", {}, head), el("tbody", {}, body));
}

function candidatesTable(verdict, trialUrl) {
  const rows = candidateRows(verdict);
  if (!rows.length) return null;
  const tasks = (list) => (list === null ? "– (the reference)" : list.length ? list.join(", ") : "none");
  const head = el("tr", {}, ["trial", "roles", "strategy", "seeds", "better on", "worse on"].map((h) =>
    el("th", { class: h === "seeds" ? "num" : "" }, h)));
  const body = rows.map((r) => el("tr", { dataset: { trial: r.trial } },
    el("td", {}, el("a", { href: trialUrl(r.trial) }, `#${r.trial}`)),
    el("td", {}, r.roles.join(", ")),
    el("td", {}, r.strategy),
    el("td", { class: "num", title: r.failed ? `${r.failed} failed` : "" },
      r.failed ? `${r.seeds} (${r.failed} failed)` : String(r.seeds)),
    el("td", { class: r.better?.length ? "better" : "" }, tasks(r.better)),
    el("td", { class: r.worse?.length ? "worse" : "" }, tasks(r.worse))));
  return el("div", { class: "table-scroll" },
    el("table", { class: "grid compact", id: "confirmed-table" }, el("thead", {}, head), el("tbody", {}, body)));
}

function renderScalarization(verdict) {
  const card = byId("scalarization");
  const scal = verdict.scalarization;
  card.hidden = !scal || !scal.pairs.length;
  if (card.hidden) return;
  const select = byId("pair-select");
  const labels = scal.pairs.map((p) => p.tasks.join(" vs "));
  if ([...select.options].map((o) => o.textContent).join("|") !== labels.join("|")) {
    select.replaceChildren(...labels.map((label, i) => el("option", { value: String(i) }, label)));
    pairIndex = Math.min(pairIndex, labels.length - 1);
  }
  select.value = String(pairIndex);
  byId("pair-choice").hidden = scal.pairs.length < 2;
  select.onchange = () => {
    pairIndex = Number(select.value);
    drawPair(verdict);
  };
  drawPair(verdict);
  byId("dominance").textContent = dominanceLine(scal);
}

function drawPair(verdict) {
  const pair = verdict.scalarization.pairs[pairIndex];
  draw("scalar-plot", scalarizationTraces(pair), {
    xaxis: { title: { text: axisTitle(verdict, pair.tasks[0]) }, zeroline: false },
    yaxis: { title: { text: axisTitle(verdict, pair.tasks[1]) }, zeroline: false },
  }, "no confirmed point");
}

/**
 * Render the verdict into the study page's verdict card. `onConfirm(body, button)` posts a confirmation request;
 * `trialUrl(number)` links a trial; `studyActive` says the study still runs trials, and `confirmSeeds` with how many
 * seeds it confirms itself when it reaches its target (0: it does not).
 */
export function renderVerdict(verdict, { onConfirm, trialUrl, studyActive = false, confirmSeeds = 0 }) {
  const status = byId("verdict-status");
  status.textContent = verdict.status;
  status.className = `badge verdict-${verdict.status.replace(" ", "-")}`;

  byId("verdict-title").textContent = verdict.optimistic
    ? "Verdict on validation data (no held-out split)" : "Verdict on held-out data";
  const warning = byId("verdict-warning");
  const provisional = verdict.provisional && verdict.status !== "not requested";
  warning.hidden = !verdict.optimistic && !provisional;
  warning.textContent = [
    verdict.optimistic
      ? "Judged on validation data: this problem has no test split, so the verdict is measured on the split that "
        + "chose the best and is optimistic."
      : "",
    provisional
      ? "Provisional: the study is still searching; it confirms again, with as many seeds, when it reaches its "
        + "target."
      : "",
  ].filter(Boolean).join(" ");

  const actions = byId("verdict-actions");
  const notRequested = verdict.status === "not requested";
  if (notRequested) {
    if (!byId("confirm-button")) {
      const seeds = el("input", { id: "confirm-seeds", type: "number", min: 2, max: 50, value: 3, title: "seeds" });
      const button = el("button", { type: "button", id: "confirm-button" }, "Confirm on held-out data");
      button.addEventListener("click", () => onConfirm({ seeds: Number(seeds.value) || 3, top: 1 }, button));
      actions.replaceChildren(el("label", { class: "inline" }, "seeds", seeds), button);
    }
  } else {
    actions.replaceChildren();
  }

  const progress = byId("verdict-progress");
  const sentence = byId("verdict-sentence");
  if (notRequested) {
    sentence.textContent = "";
    progress.textContent = "Not confirmed on held-out data yet: the numbers below are on validation data, the split "
      + "that chose the best (optimistic). Confirmation trains the baseline and the best configurations again over "
      + "fresh seeds and judges them on the test split."
      + (studyActive && confirmSeeds
        ? ` This study confirms itself with ${confirmSeeds} seeds when it reaches its target.`
        : "");
  } else {
    sentence.textContent = verdict.sentence || "";
    progress.textContent = isBusy(verdict)
      ? `Confirming on held-out data: ${progressText(verdict)}${verdict.runs.complete ? " (partial results)" : ""}`
      : `${progressText(verdict)} · seeds ${verdict.seeds.join(", ")} · judged on the ${verdict.split || "–"} split`;
  }

  const body = byId("verdict-body");
  body.hidden = notRequested;
  if (notRequested) return;
  byId("verdict-table").replaceChildren(el("div", { class: "table-scroll" }, headlineTable(verdict)));
  byId("verdict-interval").textContent = verdict.interval ? `difference: ${verdict.interval}` : "";
  renderScalarization(verdict);
  const table = candidatesTable(verdict, trialUrl);
  byId("confirmed").replaceChildren(...(table ? [table] : [el("p", { class: "hint" }, "no run has finished yet")]));
}

/** The verdict could not be read (an error message in its card). */
export function renderVerdictError(text) {
  byId("verdict-status").textContent = "";
  byId("verdict-progress").textContent = text;
}
