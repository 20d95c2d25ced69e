// The trial page: parameters, configuration, per-task loss curves and loss-weight trajectories per epoch.
// While the trial runs, only epochs after the last one shown are fetched.

import { ApiError, getJSON, path, query } from "./api.js";
import { badge, el, fmtDuration, fmtNumber, fmtTime, kvTable, showMessage } from "./dom.js";
import { countAxis, draw, plotSlot, rightAxis } from "./plots.js";
import { isActive, poller } from "./poll.js";
import { trialUrl } from "./summary.js";
import { curveTraces, epochTasks, mergeBy, seriesNames, weightingTraces } from "./traces.js";

const name = document.body.dataset.study;
const number = Number(document.body.dataset.trial);
const message = document.getElementById("trial-message");
const LIVE_STATES = ["running", "waiting"];
// Titles and axis labels of the series whose meaning is known; any other series a strategy reports is drawn
// under its own name.
const SERIES_LABELS = {
  weight: ["loss weight per task", "weight"],
  sigma: ["σ per task (uncertainty weighting)", "σ"],
  grad_norm: ["gradient norm per task (GradNorm)", "‖∇‖"],
  grad_norm_target: ["target gradient norm per task (GradNorm)", "target ‖∇‖"],
};
const seriesLabel = (key) => (Object.hasOwn(SERIES_LABELS, key) ? SERIES_LABELS[key] : [`${key} per task`, key]);
// A plot's element id from a series name that may hold any character.
const seriesSlot = (key) => `weighting-${key.replace(/[^A-Za-z0-9_-]/g, (c) => `_${c.codePointAt(0).toString(16)}`)}`;

const LEGEND_TOP = { legend: { orientation: "h", x: 0, y: 1.02, yanchor: "bottom" }, margin: { t: 28, b: 40 } };

const state = { study: null, trial: null, epochs: [] };

function renderHeader(trial) {
  document.getElementById("trial-state").replaceWith(Object.assign(badge(trial.state), { id: "trial-state" }));
  const facts = [
    ["objective", trial.values && trial.values.length > 1 ? trial.values.map((v) => fmtNumber(v)).join(", ")
      : fmtNumber(trial.objective)],
    ["duration", fmtDuration(trial.duration_s)],
    ["started", fmtTime(trial.started_at)],
    ["finished", fmtTime(trial.finished_at)],
    ["epochs", state.study ? `${state.epochs.length} of ${state.study.epochs}` : state.epochs.length],
  ];
  if (trial.baseline) facts.push(["baseline", "yes: equal weights, default learning rates"]);
  if (trial.fail_reason) facts.push(["failure", trial.fail_reason]);
  document.getElementById("trial-facts").replaceChildren(
    ...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]),
  );
  const link = (n, text) => el("a", { class: "button secondary", href: trialUrl(name, n) }, text);
  document.getElementById("trial-nav").replaceChildren(
    number > 0 ? link(number - 1, `← #${number - 1}`) : "", link(number + 1, `#${number + 1} →`),
  );
}

function renderParams(trial) {
  const entries = Object.entries(trial.params || {});
  document.getElementById("params").replaceChildren(entries.length
    ? kvTable(entries.map(([k, v]) => [k, typeof v === "number" ? fmtNumber(v) : String(v)]))
    : el("p", { class: "hint" }, "no sampled parameters (the defaults)"));
  document.getElementById("config").textContent = JSON.stringify(trial.config ?? {}, null, 2);
}

function taskNames() {
  const fromStudy = state.study ? state.study.tasks.map((t) => t.name) : [];
  return fromStudy.length ? fromStudy : epochTasks(state.epochs);
}

function drawCurves() {
  const metrics = new Map((state.study?.tasks || []).map((t) => [t.name, t.metric]));
  const curves = document.getElementById("curves");
  if (!state.epochs.length) {
    curves.replaceChildren(el("p", { class: "hint empty-plot" }, "no epoch recorded yet"));
    return;
  }
  curves.querySelector(".empty-plot")?.remove();
  const tasks = taskNames();
  // Every slot exists before the first draw, so each plot is sized to its final grid cell.
  tasks.forEach((task, i) => plotSlot(curves, `curve-${i}`, task));
  tasks.forEach((task, i) => {
    const metric = metrics.get(task) || "metric";
    const traces = curveTraces(state.epochs, task, metric);
    const layout = {
      xaxis: countAxis("epoch", state.epochs.length), yaxis: { title: { text: "loss" } }, ...LEGEND_TOP,
    };
    if (traces.some((t) => t.yaxis === "y2")) {
      layout.yaxis2 = rightAxis(metric, { showgrid: false });
    }
    draw(`curve-${i}`, traces, layout);
  });
}

/** One plot per series: the loss weight, then every series the strategy reported, whatever its name. */
function drawWeighting() {
  const box = document.getElementById("weighting");
  const tasks = taskNames();
  const keys = ["weight", ...seriesNames(state.epochs).filter((key) => key !== "weight")];
  const plots = keys.map((key) => [key, weightingTraces(state.epochs, tasks, key)]).filter(([, t]) => t.length);
  if (!plots.length) {
    box.replaceChildren(el("p", { class: "hint" }, "no loss weights recorded yet"));
    return;
  }
  box.querySelector(":scope > p.hint")?.remove();
  for (const [key] of plots) plotSlot(box, seriesSlot(key), seriesLabel(key)[0]);
  for (const [key, traces] of plots) {
    draw(seriesSlot(key), traces, { xaxis: countAxis("epoch", state.epochs.length),
      yaxis: { title: { text: seriesLabel(key)[1] } }, ...LEGEND_TOP });
  }
}

async function loadTrial() {
  const last = state.epochs.length ? state.epochs[state.epochs.length - 1].epoch : undefined;
  const trial = await getJSON(path("studies", name, "trials", number) + query({ after_epoch: last }));
  state.trial = trial;
  state.epochs = mergeBy(state.epochs, trial.epochs || [], "epoch");
  renderHeader(trial);
  renderParams(trial);
  drawCurves();
  drawWeighting();
}

const live = () => LIVE_STATES.includes(state.trial.state) && (!state.study || isActive(state.study.status));

async function tick() {
  await loadTrial();
  if (!LIVE_STATES.includes(state.trial.state)) return false;
  // The study's status is cheap; it tells when a stopped or failed study leaves this trial without a worker.
  state.study = await getJSON(path("studies", name));
  return live();
}

const refresher = poller(tick, {
  onError: (err) => showMessage(message, err.message),
  onRecover: () => showMessage(message, ""),
});

async function main() {
  const [study, trial] = await Promise.allSettled([getJSON(path("studies", name)), loadTrial()]);
  if (study.status === "fulfilled") state.study = study.value;
  if (trial.status === "rejected") {
    const err = trial.reason;
    const missing = err instanceof ApiError && err.status === 404;
    showMessage(message, missing ? `study ${name} has no trial ${number}` : err.message);
    return;
  }
  // The study (metric names, epochs per trial) may have arrived after the trial: draw once more with it.
  renderHeader(state.trial);
  drawCurves();
  drawWeighting();
  if (live()) refresher.ensure();
}

main();
