// The study list: status and progress of every study, stop/resume, and the launch form.

import { getJSON, getToken, path, postJSON, setToken } from "./api.js";
import { badge, el, fmtNumber, fmtTime, progressBar, showMessage } from "./dom.js";
import { isActive, poller } from "./poll.js";

const home = document.body.dataset.home.replace(/\/$/, "");
const studyUrl = (name) => `${home}/studies/${encodeURIComponent(name)}`;
const listMessage = document.getElementById("list-message");
const form = document.getElementById("launch");
const launchMessage = document.getElementById("launch-message");
let problems = [];

function actions(study) {
  const act = (verb) => async (event) => {
    event.target.disabled = true;
    try {
      await postJSON(path("studies", study.name, verb));
      showMessage(listMessage, "");
      if (await refresh()) refresher.ensure();
    } catch (err) {
      showMessage(listMessage, `${verb} ${study.name}: ${err.message}`);
    } finally {
      event.target.disabled = false;
    }
  };
  if (isActive(study.status) && study.status !== "stopping") {
    return el("button", { type: "button", class: "secondary small", onclick: act("stop") }, "stop");
  }
  if (study.status === "stopped" || study.status === "failed") {
    return el("button", { type: "button", class: "secondary small", onclick: act("resume") }, "resume");
  }
  return null;
}

function studyRow(s) {
  return el(
    "tr",
    { dataset: { name: s.name } },
    el("td", {}, el("a", { href: studyUrl(s.name) }, s.name)),
    el("td", { title: s.last_error || "" }, badge(s.status)),
    el("td", {}, progressBar(s.trials, s.n_trials)),
    el("td", {}, s.problem),
    el("td", {}, s.objective),
    el("td", {}, s.sampler),
    el("td", { class: "num" }, s.objective === "scalar" ? fmtNumber(s.best_value) : "Pareto"),
    el("td", {}, fmtTime(s.updated_at)),
    el("td", {}, actions(s)),
  );
}

function renderStudies(studies) {
  const body = document.querySelector("#studies tbody");
  if (!studies.length) {
    body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: 9 }, "no study yet: launch one below")));
    return;
  }
  const sorted = [...studies].sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
  body.replaceChildren(...sorted.map(studyRow));
}

async function refresh() {
  const { studies } = await getJSON("/studies");
  renderStudies(studies);
  return studies.some((s) => isActive(s.status));
}

const refresher = poller(refresh, {
  onError: (err) => showMessage(listMessage, err.message),
  onRecover: () => showMessage(listMessage, ""),
});

// --- launch form -------------------------------------------------------------------------------------------

/** An example of the options: defaults as they are, required options without one as "<type>". */
function optionExample(schema) {
  const out = {};
  const required = new Set(schema?.required || []);
  for (const [key, prop] of Object.entries(schema?.properties || {})) {
    if (prop.default !== undefined) out[key] = prop.default;
    else if (required.has(key)) out[key] = `<${prop.type || "value"}>`;
  }
  return out;
}

function selectedProblem() {
  return problems.find((p) => p.name === form.problem.value);
}

function showProblem() {
  const problem = selectedProblem();
  const info = document.getElementById("problem-info");
  if (!problem) {
    info.textContent = "";
    return;
  }
  const tasks = problem.tasks_declared_by_options
    ? "declared by the options"
    : problem.tasks.map((t) => `${t.name} (${t.kind}, ${t.metric}, ${t.direction})`).join(", ");
  const knobs = Object.entries(problem.model_knobs || {}).map(([name, k]) => `${name}=${k.default}`).join(", ");
  info.textContent = `${problem.description} — tasks: ${tasks}${knobs ? ` — model knobs: ${knobs}` : ""}`;
  form.problem_options.placeholder = JSON.stringify(optionExample(problem.options));
}

/** Plugins the server could not load: named with their error, so a missing problem is explained. */
function showBroken(broken) {
  const target = document.getElementById("broken-problems");
  target.replaceChildren(...(broken || []).map((b) => el("li", {}, `${b.name} (${b.source}): ${b.error}`)));
  target.closest("details").hidden = !(broken || []).length;
}

function parseJSONField(name) {
  const text = form[name].value.trim();
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`${name}: not valid JSON (${err.message})`);
  }
}

function launchBody() {
  const number = (name) => (form[name].value === "" ? undefined : Number(form[name].value));
  const body = {
    name: form.name.value.trim() || undefined,
    problem: form.problem.value,
    problem_options: parseJSONField("problem_options") ?? {},
    n_trials: number("n_trials"),
    space: parseJSONField("space"),
    objective: form.objective.value,
    sampler: form.sampler.value,
    pruner: form.pruner.value || undefined,
    epochs: number("epochs"),
    seed: number("seed") ?? 0,
  };
  return Object.fromEntries(Object.entries(body).filter(([, v]) => v !== undefined));
}

async function launch(event) {
  event.preventDefault();
  setToken(form.token.value.trim());
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const study = await postJSON("/studies", launchBody());
    showMessage(launchMessage, "");
    launchMessage.replaceChildren("launched ", el("a", { href: studyUrl(study.name) }, study.name));
    launchMessage.className = "message ok";
    if (await refresh()) refresher.ensure();
  } catch (err) {
    showMessage(launchMessage, err.message);
  } finally {
    button.disabled = false;
  }
}

async function loadProblems() {
  const listed = await getJSON("/problems");
  problems = listed.problems;
  showBroken(listed.broken);
  form.problem.replaceChildren(...problems.map((p) => el("option", { value: p.name }, p.name)));
  // Start on a problem that runs without options (csv needs a data file).
  const ready = problems.find((p) => p.tasks.length);
  if (ready) form.problem.value = ready.name;
  showProblem();
}

form.problem.addEventListener("change", showProblem);
form.addEventListener("submit", launch);
form.token.value = getToken();
form.token.addEventListener("change", () => setToken(form.token.value.trim()));
document.getElementById("fill-space").addEventListener("click", () => {
  const problem = selectedProblem();
  if (problem) form.space.value = JSON.stringify(problem.default_space, null, 2);
});

loadProblems().catch((err) => showMessage(launchMessage, `problems: ${err.message}`));
refresh()
  .then((active) => active && refresher.ensure())
  .catch((err) => showMessage(listMessage, err.message));
