// TokenHeatmap view (anywidget ES module, no imports, no build step).
// The DOM is built once per data change; switching method or normalisation only recolours.

// ColorBrewer RdBu from -1 (blue) to +1 (red): the same anchors and arithmetic as
// xattr_nb/widgets/_common.py, so browser and static colours agree to the unit.
const ANCHORS = [[5, 48, 97], [33, 102, 172], [67, 147, 195], [146, 197, 222], [209, 229, 240],
  [247, 247, 247], [253, 219, 199], [244, 165, 130], [214, 96, 77], [178, 24, 43], [103, 0, 31]];

export function rgb(t) {
  if (!Number.isFinite(t)) t = 0;
  t = Math.min(1, Math.max(-1, t));
  const pos = (t + 1) * 5;
  const i = Math.min(9, Math.floor(pos));
  const f = pos - i;
  const a = ANCHORS[i], b = ANCHORS[i + 1];
  return [0, 1, 2].map((k) => Math.floor(a[k] + (b[k] - a[k]) * f + 0.5));
}
const css = (c) => `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
const ink = (c) => (0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] < 128 ? "#fff" : "#000");

// Colour-scale limit: see scale_limit() in _common.py.
function limit(values, how, others) {
  let m = 0;
  if (how === "p99") {
    const a = values.map(Math.abs).sort((x, y) => x - y);
    m = a.length ? a[Math.max(0, Math.ceil(0.99 * a.length) - 1)] : 0;
  } else {
    for (const v of values) m = Math.max(m, Math.abs(v));
    if (how === "shared") for (const vs of others) for (const v of vs) m = Math.max(m, Math.abs(v));
  }
  return m > 0 ? m : 1;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function render({ model, el: host }) {
  const root = el("div", "xth-root xth-live");
  const bar = el("div", "xth-bar");
  const title = el("span", "xth-title");
  const methods = el("span", "xth-methods");
  const norm = el("select", "xth-norm");
  for (const [v, label] of [["maxabs", "scale: per method"], ["shared", "scale: shared"], ["p99", "scale: 99th pct"]]) {
    const o = el("option", "", label); o.value = v; norm.appendChild(o);
  }
  const mergeLabel = el("label", "xth-merge-label");
  const merge = el("input", "xth-merge"); merge.type = "checkbox";
  mergeLabel.append(merge, document.createTextNode(" merge sub-words"));
  const legend = el("span", "xth-legend");
  const lo = el("span", "xth-lo"), ramp = el("span", "xth-ramp"), hi = el("span", "xth-hi");
  legend.append(lo, ramp, hi);
  bar.append(title, methods, norm, mergeLabel, legend);
  // Hover details live in a line of their own above the tokens: a floating tooltip would be
  // clipped by the notebook's output area at the widget's edges.
  const tip = el("div", "xth-tip");
  const HINT = "hover a token for its exact score and rank · click to select it";
  tip.textContent = HINT;
  const body = el("div", "xth-tokens");
  root.append(bar, tip, body);
  host.appendChild(root);
  const stops = [];
  for (let k = 0; k <= 10; k++) stops.push(css(rgb(k / 5 - 1)));
  ramp.style.background = `linear-gradient(to right, ${stops.join(", ")})`;

  let data = { units: [], starts: [], ends: [], scores: {}, ranks: {} };
  let spans = [];
  let vmax = 1;

  function buildMethods() {
    methods.replaceChildren();
    for (const m of model.get("methods")) {
      const b = el("button", "xth-method", m);
      b.type = "button"; b.dataset.method = m;
      b.addEventListener("click", () => { model.set("method", m); model.save_changes(); });
      methods.appendChild(b);
    }
  }

  function paint() {
    const t0 = performance.now();
    const m = model.get("method");
    const s = data.scores[m] || [];
    const others = Object.keys(data.scores).filter((k) => k !== m).map((k) => data.scores[k]);
    vmax = limit(s, model.get("normalize"), others);
    for (let i = 0; i < spans.length; i++) {
      const c = rgb(s[i] / vmax);
      spans[i].style.backgroundColor = css(c);
      spans[i].style.color = ink(c);
    }
    for (const b of methods.children) b.classList.toggle("xth-active", b.dataset.method === m);
    norm.value = model.get("normalize");
    lo.textContent = `−${vmax.toPrecision(3)}`;
    hi.textContent = `+${vmax.toPrecision(3)}`;
    root.dataset.method = m;
    root.dataset.paintMs = (performance.now() - t0).toFixed(1);
  }

  function markSelected() {
    const sel = model.get("selected");
    for (let i = 0; i < spans.length; i++) {
      spans[i].classList.toggle("xth-selected", sel >= data.starts[i] && sel < data.ends[i]);
    }
  }

  function build() {
    const t0 = performance.now();
    data = model.get("_data") || data;
    const frag = document.createDocumentFragment();
    spans = data.units.map((u, i) => {
      const s = el("span", "xth-tok", u);
      s.dataset.i = String(i);
      frag.appendChild(s);
      return s;
    });
    body.replaceChildren(frag);
    title.textContent = model.get("title") || "";
    merge.checked = model.get("merge_subwords");
    paint();
    markSelected();
    root.dataset.n = String(spans.length);
    root.dataset.buildMs = (performance.now() - t0).toFixed(1);
  }

  // One listener for all tokens (event delegation): 2,000 spans need no 6,000 handlers.
  function unitOf(e) {
    const s = e.target.closest ? e.target.closest(".xth-tok") : null;
    return s && body.contains(s) ? Number(s.dataset.i) : -1;
  }
  body.addEventListener("mouseover", (e) => {
    const i = unitOf(e);
    if (i < 0) return;
    const m = model.get("method");
    const score = data.scores[m][i];
    tip.replaceChildren(
      el("b", "xth-tip-token", data.units[i]),
      el("span", "", ` · ${m}: ${String(score)} · rank ${data.ranks[m][i]} / ${data.units.length} by |score|`),
    );
    tip.classList.add("xth-tip-on");
  });
  body.addEventListener("mouseleave", () => { tip.textContent = HINT; tip.classList.remove("xth-tip-on"); });
  body.addEventListener("click", (e) => {
    const i = unitOf(e);
    if (i < 0) return;
    model.set("selected", data.starts[i]);
    model.save_changes();
  });
  norm.addEventListener("change", () => { model.set("normalize", norm.value); model.save_changes(); });
  merge.addEventListener("change", () => { model.set("merge_subwords", merge.checked); model.save_changes(); });

  const handlers = [
    ["change:_data", build], ["change:method", paint], ["change:normalize", paint],
    ["change:selected", markSelected], ["change:methods", () => { buildMethods(); paint(); }],
    ["change:title", () => { title.textContent = model.get("title") || ""; }],
    ["change:merge_subwords", () => { merge.checked = model.get("merge_subwords"); }],
  ];
  for (const [ev, fn] of handlers) model.on(ev, fn);
  buildMethods();
  build();
  return () => { for (const [ev, fn] of handlers) model.off(ev, fn); };
}

export default { render };
