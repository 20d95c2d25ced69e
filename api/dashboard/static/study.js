// The study page: the held-out verdict, summary, plots and the trial table; while the study runs (or its
// confirmation does), only what is new is fetched.

import { ApiError, getJSON, path, postJSON, query } from "./api.js";
import { el, fmtTime, showMessage } from "./dom.js";
import { countAxis, draw, rightAxis } from "./plots.js";
import { isActive, poller } from "./poll.js";
import { objectiveNames, renderBest, renderComparison, renderHeader, trialUrl } from "./summary.js";
import { historyCursor, historyTraces, importanceTraces, mergeBy, parallelTraces, paretoTraces } from "./traces.js";
import { TrialTable } from "./trial_table.js";
import { isBusy as verdictIsBusy, renderVerdict, renderVerdictError } from "./verdict.js";

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
  verdict: null,
};

const finishedCount = (s) => s.trials.complete + s.trials.pruned;
// Importances are computed in the background: keep asking until the server has caught up.
const importanceBusy = () => state.importance?.status === "computing" || Boolean(state.importance?.stale);
// A confirmation is queued or its runs are under way: its verdict changes as they finish.
const verdictBusy = () => verdictIsBusy(state.verdict);

async function loadStudy() {
  state.study = await getJSON(path("studies", name));
  renderHeader(state.study);
  renderBest(state.study);
  renderComparison(state.study);
  renderActions(state.study);
}

async function loadVerdict() {
  try {
    state.verdict = await getJSON(path("studies", name, "verdict"));
  } catch (err) {
    state.verdict = null;
    renderVerdictError(`verdict: ${err.message}`);
    return;
  }
  renderVerdict(state.verdict, {
    onConfirm: (body, button) => post("confirm", body, { button, target: document.getElementById("verdict-message") }),
    trialUrl: (number) => trialUrl(name, number),
    studyActive: isActive(state.study.status),
    confirmSeeds: state.study.confirm_seeds,
  });
}

/** POST one of the study's actions (stop, resume, confirm), then show what changed and keep refreshing. */
async function post(verb, body, { button = null, target = message } = {}) {
  if (button) button.disabled = true;
  try {
    await postJSON(path("studies", name, verb), body);
    showMessage(target, "");
    await loadStudy();
    await loadVerdict();
    if (isActive(state.study.status) || verdictBusy()) refresher.ensure();
  } catch (err) {
    showMessage(target, `${verb}: ${err.message}`);
  } finally {
    if (button) button.disabled = false;
  }
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
  const act = (verb) => (event) => post(verb, undefined, { button: event.target });
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
  // A study that reaches its target asks for its confirmation then: the verdict is read once more after it settles.
  const running = isActive(state.study.status);
  if (running) {
    await loadStudy();
    const s = state.study;
    await Promise.all([
      loadHistory(),
      state.table.load(),
      s.trials.complete !== state.parallelAt ? loadParallel() : null,
    ]);
  }
  if (running || verdictBusy()) await loadVerdict();
  if (importanceBusy() || finishedCount(state.study) !== state.importanceAt) await loadImportance();
  return isActive(state.study.status) || importanceBusy() || verdictBusy();
}

const refresher = poller(tick, {
  onError: (err) => showMessage(message, err.message),
  onRecover: () => showMessage(message, ""),
  isLive: () => isActive(state.study.status) || verdictBusy(),
});

async function main() {
  try {
    await loadStudy();
  } catch (err) {
    showMessage(message, err instanceof ApiError && err.status === 404 ? `no study named ${name}` : err.message);
    return;
  }
  state.table = new TrialTable(state.study);
  const results = await Promise.allSettled([
    loadVerdict(), loadHistory(), state.table.load(), loadImportance(), loadParallel(),
  ]);
  const failed = results.filter((r) => r.status === "rejected").map((r) => r.reason.message);
  if (failed.length) showMessage(message, failed.join("\n"));
  if (isActive(state.study.status) || importanceBusy() || verdictBusy()) refresher.ensure();
}

main();
