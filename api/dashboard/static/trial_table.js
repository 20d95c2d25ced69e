// The study page's trial table: one server page at a time, filtered by state and sorted by the server.

import { getJSON, path, query } from "./api.js";
import { badge, el, fmtDuration, fmtNumber } from "./dom.js";
import { objectiveNames, trialUrl } from "./summary.js";

export const PAGE_SIZE = 50;
const SORTABLE = { number: "number", objective: "objective", duration: "duration_s" };

function paramsText(params) {
  return Object.entries(params || {})
    .map(([k, v]) => `${k}=${typeof v === "number" ? fmtNumber(v, 3) : v}`)
    .join(", ");
}

export class TrialTable {
  constructor(study) {
    this.study = study;
    this.view = { state: "", order: "number", offset: 0 };
    this.filter = document.getElementById("state-filter");
    this.order = document.getElementById("order");
    this.filter.addEventListener("change", () => this.go({ state: this.filter.value, offset: 0 }));
    this.order.addEventListener("change", () => this.go({ order: this.order.value, offset: 0 }));
    document.getElementById("prev").addEventListener("click", () => this.go({ offset: this.view.offset - PAGE_SIZE }));
    document.getElementById("next").addEventListener("click", () => this.go({ offset: this.view.offset + PAGE_SIZE }));
  }

  go(change) {
    Object.assign(this.view, change);
    this.view.offset = Math.max(0, this.view.offset);
    return this.load();
  }

  /** Fetch and draw the current page only (also what a refresh tick calls). */
  async load() {
    const { state, order, offset } = this.view;
    const page = await getJSON(path("studies", this.study.name, "trials") +
      query({ state, order, limit: PAGE_SIZE, offset }));
    this.render(page);
    return page;
  }

  /** Per-task metric columns; a Pareto study's values already are those metrics. */
  taskColumns() {
    return this.study.objective === "pareto" ? [] : this.study.tasks;
  }

  header() {
    const sortKey = this.view.order.replace(/^-/, "");
    const sortable = (label, key) => {
      const on = sortKey === SORTABLE[key];
      const arrow = on ? (this.view.order.startsWith("-") ? " ↓" : " ↑") : "";
      const next = on && !this.view.order.startsWith("-") ? `-${SORTABLE[key]}` : SORTABLE[key];
      return el("button", { type: "button", class: "sort", onclick: () => {
        this.order.value = next;
        this.go({ order: next, offset: 0 });
      } }, label + arrow);
    };
    const values = objectiveNames(this.study);
    return el("tr", {},
      el("th", {}, sortable("#", "number")), el("th", {}, "state"),
      values.map((n, i) => el("th", { class: "num" }, i === 0 ? sortable(n, "objective") : n)),
      this.taskColumns().map((t) =>
        el("th", { class: "num", title: `validation ${t.metric}` }, `${t.name} ${t.metric}`)),
      el("th", { class: "num" }, sortable("duration", "duration")), el("th", {}, "parameters"));
  }

  row(t) {
    const values = this.study.objective === "pareto" ? this.study.tasks.map((_, i) => t.values?.[i]) : [t.objective];
    return el("tr", { dataset: { number: t.number } },
      el("td", {}, el("a", { href: trialUrl(this.study.name, t.number) }, `#${t.number}`),
        t.baseline ? el("span", { class: "tag" }, "baseline") : null),
      el("td", {}, badge(t.state)),
      values.map((v) => el("td", { class: "num" }, fmtNumber(v))),
      this.taskColumns().map((task) => el("td", { class: "num" }, fmtNumber(t.tasks?.[task.name]?.metric))),
      el("td", { class: "num" }, fmtDuration(t.duration_s)),
      el("td", { class: "params", title: paramsText(t.params) }, paramsText(t.params) || "defaults"));
  }

  render(page) {
    const table = document.getElementById("trials");
    table.tHead.replaceChildren(this.header());
    const columns = 4 + objectiveNames(this.study).length + this.taskColumns().length;
    const rows = page.items.length ? page.items.map((t) => this.row(t))
      : [el("tr", { class: "empty" }, el("td", { colspan: columns }, "no trials"))];
    table.tBodies[0].replaceChildren(...rows);
    const last = Math.min(page.offset + page.items.length, page.total);
    document.getElementById("page-info").textContent =
      page.total ? `${page.offset + 1}–${last} of ${page.total}` : "0 trials";
    document.getElementById("prev").disabled = page.offset <= 0;
    document.getElementById("next").disabled = last >= page.total;
  }
}
