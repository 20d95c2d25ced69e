// Plot data computed apart from drawing: each function turns API JSON into plotly traces (plain objects).
// Nothing here touches the DOM or Plotly, so the functions can be checked on their own.

const COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];
export const color = (i) => COLORS[i % COLORS.length];

const isNum = (v) => typeof v === "number" && Number.isFinite(v);

/** Merge rows keyed by `key` (later rows win) and return them sorted by that key. */
export function mergeBy(rows, incoming, key) {
  const byKey = new Map(rows.map((r) => [r[key], r]));
  for (const row of incoming) byKey.set(row[key], row);
  return [...byKey.values()].sort((a, b) => a[key] - b[key]);
}

const FINISHED = ["complete", "pruned", "failed", "interrupted"];
// How far behind the newest trial the history cursor may lag while waiting for a slow trial to finish.
const MAX_CURSOR_LAG = 200;

/** Every trial up to the cursor is known finished, so `history?after=cursor` returns only what may have changed. */
export function historyCursor(items) {
  let cursor = -1;
  const finished = new Set(items.filter((t) => FINISHED.includes(t.state)).map((t) => t.number));
  while (finished.has(cursor + 1)) cursor += 1;
  const newest = items.length ? items[items.length - 1].number : -1;
  return Math.max(cursor, newest - MAX_CURSOR_LAG);
}

/** The running best of complete trials, in trial-number order. */
export function bestSoFar(items, direction = "minimize") {
  const better = direction === "maximize" ? (a, b) => a > b : (a, b) => a < b;
  const x = [];
  const y = [];
  let best = null;
  for (const item of items) {
    if (item.state !== "complete" || !isNum(item.objective)) continue;
    if (best === null || better(item.objective, best)) best = item.objective;
    x.push(item.number);
    y.push(best);
  }
  return { x, y };
}

/** History: objective per trial (complete and pruned) and the best so far; one series per objective for pareto. */
export function historyTraces(items, { objective = "scalar", directions = ["minimize"], names = [] } = {}) {
  if (objective === "pareto") {
    return directions.map((_, i) => {
      const points = items.filter((t) => t.state === "complete" && isNum(t.values?.[i]));
      // Two axes: the first objective on the left, the others on the right (shown one at a time from the legend).
      return {
        type: "scatter", mode: "markers", name: names[i] || `objective ${i}`, yaxis: i === 0 ? "y" : "y2",
        visible: i < 2 ? true : "legendonly",
        x: points.map((t) => t.number), y: points.map((t) => t.values[i]), marker: { color: color(i), size: 7 },
      };
    });
  }
  const series = (state, name, marker) => {
    const points = items.filter((t) => t.state === state && isNum(t.objective));
    return {
      type: "scatter", mode: "markers", name, x: points.map((t) => t.number), y: points.map((t) => t.objective),
      marker, hovertemplate: `trial %{x}<br>${name}: %{y:.4g}<extra></extra>`,
    };
  };
  const best = bestSoFar(items, directions[0]);
  return [
    series("complete", "complete", { color: color(0), size: 8 }),
    series("pruned", "pruned", { color: "#9ca3af", size: 7, symbol: "x" }),
    { type: "scatter", mode: "lines", name: "best so far", x: best.x, y: best.y,
      line: { color: color(1), shape: "hv", width: 2 } },
  ];
}

/** Horizontal bars, the most important parameter on top. */
export function importanceTraces(importances) {
  const entries = Object.entries(importances || {}).filter(([, v]) => isNum(v)).sort((a, b) => a[1] - b[1]);
  if (!entries.length) return [];
  return [{
    type: "bar", orientation: "h", x: entries.map(([, v]) => v), y: entries.map(([k]) => k),
    marker: { color: color(0) }, hovertemplate: "%{y}: %{x:.3f}<extra></extra>",
  }];
}

/** The first two objectives of every complete trial, the Pareto set highlighted and joined in order. */
export function paretoTraces(items, paretoNumbers) {
  const inSet = new Set(paretoNumbers);
  const points = items.filter((t) => t.state === "complete" && isNum(t.values?.[0]) && isNum(t.values?.[1]));
  const trace = (rows, name, marker, mode = "markers") => ({
    type: "scatter", mode, name, x: rows.map((t) => t.values[0]), y: rows.map((t) => t.values[1]),
    text: rows.map((t) => `trial ${t.number}`), customdata: rows.map((t) => t.number), marker,
    hovertemplate: "%{text}<br>%{x:.4g}, %{y:.4g}<extra></extra>",
  });
  const front = points.filter((t) => inSet.has(t.number)).sort((a, b) => a.values[0] - b.values[0]);
  return [
    trace(points.filter((t) => !inSet.has(t.number)), "trials", { color: "#9ca3af", size: 7 }),
    { ...trace(front, "Pareto front", { color: color(1), size: 10 }, "lines+markers"),
      line: { color: color(1), shape: "hv", dash: "dot" } },
  ];
}

const MISSING = "n/a";

function fmtTick(v) {
  return Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-2) ? v.toExponential(1) : String(Number(v.toPrecision(3)));
}

/** Ticks for a numeric axis over [lo, hi]; on a log10 axis at powers of ten (and 2 and 5 times them when the powers
 * alone give fewer than three ticks), and at each end that no such tick is near. */
function numericTicks(lo, hi, log) {
  if (log) {
    const at = (steps) => {
      const out = [];
      for (let k = Math.floor(lo); k <= Math.ceil(hi); k += 1) {
        for (const m of steps) if (k + Math.log10(m) >= lo - 1e-9 && k + Math.log10(m) <= hi + 1e-9) out.push([m, k]);
      }
      return out;
    };
    let picked = at([1]);
    if (picked.length < 3) picked = at([1, 2, 5]);
    const ticks = picked.map(([m, k]) => [k + Math.log10(m), `${m}e${k}`]);
    // Plotly draws a parcoords axis from its lowest to its highest tick: the ends get one unless a tick is near.
    const near = (v) => ticks.some(([t]) => Math.abs(t - v) <= 0.15 * (hi - lo));
    for (const end of hi === lo ? [lo] : [lo, hi]) if (!near(end)) ticks.push([end, fmtTick(10 ** end)]);
    ticks.sort((x, y) => x[0] - y[0]);
    return { tickvals: ticks.map(([v]) => v), ticktext: ticks.map(([, text]) => text) };
  }
  const tickvals = hi === lo ? [lo] : [0, 1, 2, 3, 4].map((i) => lo + ((hi - lo) * i) / 4);
  return { tickvals, ticktext: tickvals.map(fmtTick) };
}

const isRange = (knob) => knob !== null && typeof knob === "object" && "low" in knob && "high" in knob;

/**
 * The search space's entry for an Optuna parameter, named as the study layer names them: `lr_shared`,
 * `<strategy>.<knob>`, `weight_<task>`, `lr_head_<task>`, `model_<knob>`; undefined when the space does not say.
 */
export function spaceKnob(space, name) {
  if (!space) return undefined;
  const dot = name.indexOf(".");
  if (dot > 0) return space.strategies?.[name.slice(0, dot)]?.[name.slice(dot + 1)];
  if (name in space) return space[name];
  for (const [prefix, key] of [["lr_head_", "lr_head"], ["weight_", "weights"], ["model_", "model"]]) {
    if (!name.startsWith(prefix) || !space[key]) continue;
    return isRange(space[key]) ? space[key] : space[key][name.slice(prefix.length)];
  }
  return undefined;
}

/** Whether a parameter was sampled log-uniformly, as its study's space says; undefined when the space does not. */
export function sampledOnLog(space, name) {
  const knob = spaceKnob(space, name);
  return isRange(knob) ? Boolean(knob.log) : undefined;
}

/**
 * One parcoords dimension per parameter: categories become integers; a log10 axis for a parameter sampled
 * log-uniformly (`log`), or, when that is not known, for a wide positive range. Trials without the parameter
 * (conditional spaces) get an "n/a" position below the others: parcoords drops NaN lines.
 */
export function paramDimension(name, values, log = undefined) {
  const present = values.filter((v) => v !== undefined && v !== null);
  const missing = present.length < values.length;
  if (present.length && present.every(isNum)) {
    const lo = Math.min(...present);
    const hi = Math.max(...present);
    const logAxis = lo > 0 && (log ?? hi / lo >= 100);
    const f = logAxis ? Math.log10 : (v) => v;
    const [a, b] = [f(lo), f(hi)];
    const ticks = numericTicks(a, b, logAxis);
    const label = logAxis ? `${name} (log)` : name;
    if (!missing) return { label, values: values.map(f), ...(logAxis ? ticks : {}) };
    const gap = (b - a || 1) * 0.2;
    return {
      label, values: values.map((v) => (isNum(v) ? f(v) : a - gap)), range: [a - gap, b],
      tickvals: [a - gap, ...ticks.tickvals], ticktext: [MISSING, ...ticks.ticktext],
    };
  }
  const categories = [...new Set(present.map(String))].sort();
  if (missing) categories.unshift(MISSING);
  const index = new Map(categories.map((c, i) => [c, i]));
  return {
    label: name, values: values.map((v) => index.get(v === undefined || v === null ? MISSING : String(v))),
    tickvals: categories.map((_, i) => i), ticktext: categories, range: [-0.25, categories.length - 0.75],
  };
}

/**
 * Parallel coordinates over the parameters of finished trials, coloured by the first objective. Parameters come in
 * `importances` order (most important first) when given, the others alphabetically after them; those the study's
 * `space` samples log-uniformly get log axes.
 */
export function parallelTraces(rows, { direction = "minimize", objectiveName = "objective", importances = {},
  space = null } = {}) {
  const scored = rows.filter((r) => isNum(r.objective ?? r.values?.[0]));
  if (!scored.length) return [];
  const weight = (n) => (isNum(importances[n]) ? importances[n] : -1);
  const names = [...new Set(scored.flatMap((r) => Object.keys(r.params || {})))]
    .sort((a, b) => weight(b) - weight(a) || a.localeCompare(b));
  const objective = scored.map((r) => r.objective ?? r.values[0]);
  const dimensions = names.map((n) => paramDimension(n, scored.map((r) => r.params?.[n]), sampledOnLog(space, n)));
  dimensions.push({ label: objectiveName, values: objective });
  return [{
    type: "parcoords", dimensions,
    line: { color: objective, colorscale: "Viridis", reversescale: direction === "minimize", showscale: true },
  }];
}

/** Train (solid) and validation (dashed) loss of one task; its metric on a second axis unless it is the loss. */
export function curveTraces(epochs, task, metricName = "metric") {
  const rows = epochs.filter((e) => e.tasks?.[task]);
  const x = rows.map((e) => e.epoch);
  const pick = (key) => rows.map((e) => e.tasks[task][key] ?? null);
  const val = pick("val_loss");
  const traces = [
    { type: "scatter", mode: "lines+markers", name: "train loss", x, y: pick("train_loss"), line: { color: color(0) } },
    { type: "scatter", mode: "lines+markers", name: "val loss", x, y: val, line: { color: color(1), dash: "dash" } },
  ];
  const metric = pick("metric");
  const sameAsLoss = metric.every((m, i) => !isNum(m) || Math.abs(m - val[i]) <= 1e-9 * Math.max(1, Math.abs(m)));
  if (metric.some(isNum) && !sameAsLoss) {
    traces.push({ type: "scatter", mode: "lines", name: metricName, x, y: metric, yaxis: "y2",
      line: { color: color(2), dash: "dot" } });
  }
  return traces;
}

/** A task's value of one strategy series at one epoch: the loss weight, or a series the strategy reported. */
function seriesValue(numbers, key) {
  return key === "weight" ? numbers.weight ?? null : numbers.series?.[key] ?? null;
}

/** One line per task for `key` ("weight" or any series name); empty when no task reports it. */
export function weightingTraces(epochs, tasks, key) {
  const traces = tasks.map((task, i) => {
    const rows = epochs.filter((e) => e.tasks?.[task]);
    return {
      type: "scatter", mode: "lines+markers", name: task, x: rows.map((e) => e.epoch),
      y: rows.map((e) => seriesValue(e.tasks[task], key)), line: { color: color(i) },
    };
  });
  return traces.some((t) => t.y.some(isNum)) ? traces : [];
}

/** The names of the series the strategy reported besides the weight, in first-seen order over the epochs. */
export function seriesNames(epochs) {
  return [...new Set(epochs.flatMap((e) => Object.values(e.tasks || {}).flatMap((t) => Object.keys(t?.series || {}))))];
}

/** Task names in first-seen order over the epochs. */
export function epochTasks(epochs) {
  return [...new Set(epochs.flatMap((e) => Object.keys(e.tasks || {})))];
}

/**
 * Baseline vs best per task: the change relative to the baseline and whether it is an improvement. The task's
 * declared direction decides (a rise is better only for a maximised metric); without one, `better` stays null.
 */
export function comparisonRows(comparison, tasks = []) {
  const direction = new Map(tasks.map((t) => [t.name, t.direction]));
  return Object.entries(comparison || {}).map(([task, c]) => {
    let change = c.change;
    if (!isNum(change) && isNum(c.baseline) && isNum(c.best) && c.baseline !== 0) {
      change = (c.best - c.baseline) / Math.abs(c.baseline);
    }
    const dir = c.direction || direction.get(task);
    const known = dir === "maximize" || dir === "minimize";
    const better = known && isNum(change) && change !== 0 ? (dir === "maximize") === change > 0 : null;
    return { task, metric: c.metric ?? c.metric_name ?? "metric", direction: known ? dir : null,
      baseline: c.baseline, best: c.best, change: isNum(change) ? change : null, better };
  });
}
