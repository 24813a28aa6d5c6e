// CircuitView (anywidget ES module, no imports, no build step): a layered SVG graph whose layout,
// sizes and colours are computed in Python (xattr_nb.widgets.circuit.circuit_layout). The
// threshold slider only toggles a class on edges, so 12 layers x 12 heads stay responsive.
// Nodes arrive with their shape, label, tooltip text and whether they fade, so this module draws
// any node kind (heads, MLPs, CNN channels, units, ...) without knowing it.

const SVG = "http://www.w3.org/2000/svg";
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

function render({ model, el: host }) {
  const root = el("div", "xcv-root xcv-live");
  const bar = el("div", "xcv-bar");
  const title = el("span", "xcv-title");
  const label = el("label", "xcv-threshold-label", "edge |weight| ≥ ");
  const slider = el("input", "xcv-threshold");
  slider.type = "range";
  const value = el("span", "xcv-threshold-value");
  const count = el("span", "xcv-count");
  label.append(slider, value);
  bar.append(title, label, count);
  const wrap = el("div", "xcv-wrap");
  const tip = el("div", "xcv-tip"); tip.hidden = true;
  root.append(bar, wrap, tip);
  host.appendChild(root);

  let g = { nodes: [], edges: [] };
  let nodeEls = [], edgeEls = [], labelEls = [];

  function build() {
    g = model.get("_graph") || g;
    const s = svg("svg", { class: "xcv-svg", viewBox: `0 0 ${g.width} ${g.height}`, width: g.width });
    const axes = svg("g", { class: "xcv-axes" });
    (g.col_x || []).forEach((x, i) => {
      const t = svg("text", { x, y: 14, "text-anchor": "middle" });
      t.textContent = (g.col_labels && g.col_labels[i] !== undefined) ? String(g.col_labels[i]) : `L${i}`;
      axes.appendChild(t);
    });
    (g.row_y || []).forEach((y, h) => {
      const t = svg("text", { x: g.col_x[0] - 14, y: y + 3, "text-anchor": "end" });
      t.textContent = `H${h}`; axes.appendChild(t);
    });
    const edges = svg("g", { class: "xcv-edges" });
    edgeEls = g.edges.map((e, i) => {
      const p = svg("path", { class: "xcv-edge", d: e.d, stroke: e.stroke, "stroke-width": e.width });
      p.dataset.i = String(i);
      edges.appendChild(p);
      return p;
    });
    const nodes = svg("g", { class: "xcv-nodes" });
    labelEls = [];
    nodeEls = g.nodes.map((n, i) => {
      const common = { class: `xcv-node xcv-${n.kind}`, fill: n.fill, "data-name": n.name, "data-i": i };
      const rect = n.shape ? n.shape === "rect" : n.kind === "mlp";
      const shape = rect
        ? svg("rect", { ...common, x: n.x - n.r, y: n.y - n.r, width: 2 * n.r, height: 2 * n.r, rx: 2 })
        : svg("circle", { ...common, cx: n.x, cy: n.y, r: n.r });
      nodes.appendChild(shape);
      let label = null;
      if (n.label !== undefined && n.label !== null) {
        label = svg("text", {
          class: "xcv-label", x: n.label_x ?? n.x, y: n.label_y ?? n.y + n.r + 11, "text-anchor": n.label_anchor || "middle",
        });
        label.textContent = String(n.label); nodes.appendChild(label);
      }
      labelEls.push(label);
      return shape;
    });
    s.append(axes, edges, nodes);
    wrap.replaceChildren(s);
    const max = g.max_weight || 1;
    slider.min = "0"; slider.max = String(max); slider.step = String(max / 200);
    title.textContent = model.get("title") || "";
    prune();
    markSelected();
  }

  function prune() {
    const t = model.get("threshold");
    slider.value = String(t);
    value.textContent = ` ${t.toPrecision(3)}`;
    const live = new Set();
    let shown = 0;
    g.edges.forEach((e, i) => {
      const keep = Math.abs(e.w) >= t;
      edgeEls[i].classList.toggle("xcv-pruned", !keep);
      if (keep) { shown++; live.add(e.src); live.add(e.dst); }
    });
    g.nodes.forEach((n, i) => {
      const component = n.component ?? (n.kind === "head" || n.kind === "mlp");
      const faded = component && !live.has(n.name);
      nodeEls[i].classList.toggle("xcv-faded", faded);
      if (labelEls[i]) labelEls[i].classList.toggle("xcv-faded", faded);
    });
    count.textContent = `${shown} / ${g.edges.length} edges · ${g.nodes.length} nodes`;
    root.dataset.shownEdges = String(shown);
  }

  function markSelected() {
    const sel = model.get("selected");
    nodeEls.forEach((e, i) => e.classList.toggle("xcv-selected", g.nodes[i].name === sel));
    const sel2 = new Set([sel]);
    edgeEls.forEach((p, i) => p.classList.toggle("xcv-incident", !!sel && (sel2.has(g.edges[i].src) || sel2.has(g.edges[i].dst))));
  }

  function showTip(evt, lines) {
    tip.replaceChildren(...lines.map((l, k) => el(k ? "div" : "b", "", l)));
    const rr = root.getBoundingClientRect();
    tip.hidden = false;
    // Keep the tooltip inside the widget: the output area clips whatever sticks out.
    let left = evt.clientX - rr.left + 12, top = evt.clientY - rr.top + 12;
    if (left + tip.offsetWidth > root.clientWidth) left = Math.max(0, evt.clientX - rr.left - tip.offsetWidth - 12);
    if (top + tip.offsetHeight > root.clientHeight) top = Math.max(0, evt.clientY - rr.top - tip.offsetHeight - 12);
    tip.style.left = `${left}px`;
    tip.style.top = `${top}px`;
  }
  wrap.addEventListener("mouseover", (evt) => {
    const t = evt.target;
    if (t.classList && t.classList.contains("xcv-node")) {
      const n = g.nodes[Number(t.dataset.i)];
      const nIn = g.edges.filter((e) => e.dst === n.name).length, nOut = g.edges.filter((e) => e.src === n.name).length;
      const where = n.desc || (n.kind === "head" ? `head ${n.head} of layer ${n.layer}` : n.kind === "mlp" ? `MLP of layer ${n.layer}` : n.kind);
      showTip(evt, [n.name, where, `score ${String(n.score)}`, `${nIn} in · ${nOut} out`]);
    } else if (t.classList && t.classList.contains("xcv-edge")) {
      const e = g.edges[Number(t.dataset.i)];
      showTip(evt, [`${e.src} → ${e.dst}`, `weight ${String(e.w)}`]);
    }
  });
  wrap.addEventListener("mouseout", () => { tip.hidden = true; });
  wrap.addEventListener("click", (evt) => {
    const t = evt.target;
    if (t.classList && t.classList.contains("xcv-node")) {
      model.set("selected", t.dataset.name);
      model.save_changes();
    }
  });
  slider.addEventListener("input", () => {
    model.set("threshold", Number(slider.value));
    prune();  // at once, before the round trip
    model.save_changes();
  });

  const handlers = [["change:_graph", build], ["change:threshold", prune], ["change:selected", markSelected],
    ["change:title", () => { title.textContent = model.get("title") || ""; }]];
  for (const [ev, fn] of handlers) model.on(ev, fn);
  build();
  return () => { for (const [ev, fn] of handlers) model.off(ev, fn); };
}

export default { render };
