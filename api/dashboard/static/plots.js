// Drawing: the only module that calls Plotly (loaded as a classic script from /static/vendor/plotly.min.js).

const CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["select2d", "lasso2d"] };
const FONT = { family: "system-ui, -apple-system, 'Segoe UI', sans-serif", size: 12, color: "#1f2937" };

export function baseLayout(extra = {}) {
  return {
    font: FONT,
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "#ffffff",
    hovermode: "closest",
    ...extra,
    margin: { l: 56, r: 24, t: 12, b: 44, ...extra.margin },
    legend: { orientation: "h", y: -0.22, ...extra.legend },
  };
}

/** An axis counting trials or epochs: whole-number ticks, every one of them while there are few. */
export function countAxis(title, n) {
  return { title: { text: title }, tickformat: "d", dtick: n <= 12 ? 1 : undefined, zeroline: false };
}

/**
 * A second y axis on the right. Its margin grows to fit its tick labels and title (automargin): a fixed margin
 * lets wide tick labels run into the title.
 */
export function rightAxis(title, extra = {}) {
  return { title: { text: title, standoff: 8 }, overlaying: "y", side: "right", automargin: true, ...extra };
}

/** Draw (or redraw in place) `traces` into the element with id `id`; an empty list shows `empty` instead. */
export function draw(id, traces, layout = {}, empty = "nothing to plot yet") {
  const node = document.getElementById(id);
  node.classList.toggle("is-empty", !traces.length);
  if (!traces.length) {
    if (node.dataset.plotted) window.Plotly.purge(node);
    delete node.dataset.plotted;
    const hint = Object.assign(document.createElement("p"), { className: "hint empty-plot", textContent: empty });
    node.replaceChildren(...(empty ? [hint] : []));
    return;
  }
  if (!node.dataset.plotted) node.replaceChildren();
  node.dataset.plotted = "1";
  window.Plotly.react(node, traces, baseLayout(layout), CONFIG);
}

/** A plot container appended to `parent` (for pages with one plot per task). */
export function plotSlot(parent, id, title) {
  let node = document.getElementById(id);
  if (!node) {
    const figure = document.createElement("figure");
    figure.className = "slot";
    const caption = document.createElement("figcaption");
    caption.textContent = title;
    node = document.createElement("div");
    node.id = id;
    node.className = "plot small";
    figure.append(caption, node);
    parent.append(figure);
  }
  return node;
}
