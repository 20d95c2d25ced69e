// The study page: summary, plots and the trial table; while the study runs, only what is new is fetched.

import { ApiError, getJSON, path, postJSON, query } from "./api.js";
import { el, fmtTime, showMessage } from "./dom.js";
import { countAxis, draw, rightAxis } from "./plots.js";
import { isActive, poller } from "./poll.js";
import { objectiveNames, renderBest, renderComparison, renderHeader } from "./summary.js";
import { historyCursor, historyTraces, importanceTraces, mergeBy, parallelTraces, paretoTraces } from "./traces.js";
import { TrialTable } from "./trial_table.js";

const name = document.body.dataset.study;
const message = document.getElementById("study-message");
const PARALLEL_LIMIT = 300;

const state = {
  study: null,
  history: [],
  importance: null,
  importanceAt: -1, // finished-trial count when importance was last fetched
  parallelAt: -1, // complete-trial count when the parallel-coordinates rows were last fetched
  parallelRows: [],
  table: null,
};

const finishedCount = (s) => s.trials.complete + s.trials.pruned;
// Importances are computed in the background: keep asking until the server has caught up.
const importanceBusy = () => state.importance?.status === "computing" || Boolean(state.importance?.stale);

async function loadStudy() {
  state.study = await getJSON(path("studies", name));
  renderHeader(state.study);
  renderBest(state.study);
  renderComparison(state.study);
  renderActions(state.study);
}

async function loadHistory() {
  const after = state.history.length ? historyCursor(state.history) : undefined;
  const { items } = await getJSON(path("studies", name, "history") + query({ after }));
  state.history = mergeBy(state.history, items, "number");
  drawHistory();
}

function drawHistory() {
  const s = state.study;
  const names = objectiveNames(s);
  const newest = state.history.length ? state.history[state.history.length - 1].number + 1 : 0;
  const layout = { xaxis: countAxis("trial", newest), yaxis: { title: { text: names[0] } } };
  if (s.objective === "pareto" && names.length > 1) {
    layout.yaxis2 = rightAxis(names[1]);
  }
  draw("history-plot", historyTraces(state.history, { objective: s.objective, directions: s.directions, names }),
    layout, "no finished trial yet");
  if (s.objective === "pareto" && s.directions.length >= 2) {
    document.getElementById("pareto-card").hidden = false;
    draw("pareto-plot", paretoTraces(state.history, s.best.map((t) => t.number)),
      { xaxis: { title: { text: `${names[0]} (${s.directions[0]})` } },
        yaxis: { title: { text: `${names[1]} (${s.directions[1]})` } } }, "no complete trial yet");
  }
}

async function loadImportance() {
  state.importanceAt = finishedCount(state.study);
  const imp = await getJSON(path("studies", name, "importance"));
  state.importance = imp;
  const status = document.getElementById("importance-status");
  if (imp.status === "ready") {
    const when = imp.computed_at ? `, computed ${fmtTime(imp.computed_at)}` : "";
    const how = `${imp.evaluator || "importance"} over ${imp.n_trials} complete trials${when}`;
    status.textContent = [how, imp.stale ? "refreshing" : "", imp.note || ""].filter(Boolean).join(" · ");
  } else {
    status.textContent = imp.status === "computing" ? "computing…" : imp.note || "not available yet";
  }
  draw("importance-plot", importanceTraces(imp.importances), { margin: { l: 120 },
    xaxis: { title: { text: "importance" } } }, "");
  if (state.parallelRows.length) drawParallel();  // its axes follow the importances
}

async function loadParallel() {
  const s = state.study;
  state.parallelAt = s.trials.complete;
  const order = s.objective === "pareto" ? "-number" : s.directions[0] === "maximize" ? "-objective" : "objective";
  const page = await getJSON(path("studies", name, "trials") +
    query({ state: "complete", order, limit: PARALLEL_LIMIT }));
  const what = s.objective === "pareto" ? "latest" : "best";
  document.getElementById("parallel-status").textContent = page.total > page.items.length
    ? `the ${what} ${page.items.length} of ${page.total} complete trials` : `${page.total} complete trials`;
  state.parallelRows = page.items;
  drawParallel();
}

function drawParallel() {
  const s = state.study;
  const options = { direction: s.directions[0], objectiveName: objectiveNames(s)[0],
    importances: state.importance?.importances, space: s.space };
  draw("parallel-plot", parallelTraces(state.parallelRows, options), { margin: { l: 64, r: 64, t: 48, b: 24 } },
    "no complete trial yet");
}

function renderActions(study) {
  const act = (verb) => async () => {
    try {
      await postJSON(path("studies", name, verb));
      showMessage(message, "");
      await loadStudy();
      if (isActive(state.study.status)) refresher.ensure();
    } catch (err) {
      showMessage(message, `${verb}: ${err.message}`);
    }
  };
  const buttons = [];
  if (["queued", "running"].includes(study.status)) {
    buttons.push(el("button", { type: "button", class: "secondary", onclick: act("stop") }, "stop"));
  }
  if (["stopped", "failed"].includes(study.status)) {
    buttons.push(el("button", { type: "button", class: "secondary", onclick: act("resume") }, "resume"));
  }
  document.getElementById("study-actions").replaceChildren(...buttons);
}

async function tick() {
  if (isActive(state.study.status)) {
    await loadStudy();
    const s = state.study;
    await Promise.all([
      loadHistory(),
      state.table.load(),
      s.trials.complete !== state.parallelAt ? loadParallel() : null,
    ]);
  }
  if (importanceBusy() || finishedCount(state.study) !== state.importanceAt) await loadImportance();
  return isActive(state.study.status) || importanceBusy();
}

const refresher = poller(tick, {
  onError: (err) => showMessage(message, err.message),
  onRecover: () => showMessage(message, ""),
  isLive: () => isActive(state.study.status),
});

async function main() {
  try {
    await loadStudy();
  } catch (err) {
    showMessage(message, err instanceof ApiError && err.status === 404 ? `no study named ${name}` : err.message);
    return;
  }
  state.table = new TrialTable(state.study);
  const results = await Promise.allSettled([loadHistory(), state.table.load(), loadImportance(), loadParallel()]);
  const failed = results.filter((r) => r.status === "rejected").map((r) => r.reason.message);
  if (failed.length) showMessage(message, failed.join("\n"));
  if (isActive(state.study.status) || importanceBusy()) refresher.ensure();
}

main();
