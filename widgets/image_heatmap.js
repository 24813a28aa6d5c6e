// ImageHeatmap view (anywidget ES module, no imports, no build step).
// Images and overlays arrive as PNG data; the method switch swaps overlay sources, the opacity
// slider sets one CSS property per overlay, the truth toggle shows or hides the outlines.

const ANCHORS = [[5, 48, 97], [33, 102, 172], [67, 147, 195], [146, 197, 222], [209, 229, 240],
  [247, 247, 247], [253, 219, 199], [244, 165, 130], [214, 96, 77], [178, 24, 43], [103, 0, 31]];
function rgb(t) {
  t = Math.min(1, Math.max(-1, Number.isFinite(t) ? t : 0));
  const pos = (t + 1) * 5, i = Math.min(9, Math.floor(pos)), f = pos - i;
  return [0, 1, 2].map((k) => Math.floor(ANCHORS[i][k] + (ANCHORS[i + 1][k] - ANCHORS[i][k]) * f + 0.5));
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
const SVG = "http://www.w3.org/2000/svg";
const png = (b64) => `data:image/png;base64,${b64}`;

function render({ model, el: host }) {
  const root = el("div", "xih-root xih-live");
  const bar = el("div", "xih-bar");
  const title = el("span", "xih-title");
  const methods = el("span", "xih-methods");
  const opLabel = el("label", "xih-opacity-label", "opacity ");
  const opacity = el("input", "xih-opacity");
  opacity.type = "range"; opacity.min = "0"; opacity.max = "1"; opacity.step = "0.05";
  opLabel.appendChild(opacity);
  const truthLabel = el("label", "xih-truth-label");
  const truth = el("input", "xih-truth"); truth.type = "checkbox";
  truthLabel.append(truth, document.createTextNode(" ground truth"));
  const pager = el("span", "xih-pager");
  const prev = el("button", "xih-prev", "◀"), next = el("button", "xih-next", "▶");
  prev.type = next.type = "button";
  const pageText = el("span", "xih-page");
  pager.append(prev, pageText, next);
  const legend = el("span", "xih-legend");
  const ramp = el("span", "xih-ramp");
  const stops = [];
  for (let k = 0; k <= 10; k++) stops.push(`rgb(${rgb(k / 5 - 1).join(", ")})`);
  ramp.style.background = `linear-gradient(to right, ${stops.join(", ")})`;
  legend.append(el("span", "", "−max"), ramp, el("span", "", "+max"));
  bar.append(title, methods, opLabel, truthLabel, pager, legend);
  const grid = el("div", "xih-grid");
  root.append(bar, grid);
  host.appendChild(root);

  let cells = [];  // {index, overlay, truth} of the current page

  function buildMethods() {
    methods.replaceChildren();
    for (const m of model.get("methods")) {
      const b = el("button", "xih-method", m);
      b.type = "button"; b.dataset.method = m;
      b.addEventListener("click", () => { model.set("method", m); model.save_changes(); });
      methods.appendChild(b);
    }
  }

  function style() {
    const op = model.get("opacity"), show = model.get("show_truth");
    opacity.value = String(op);
    truth.checked = show;
    for (const c of cells) {
      c.overlay.style.opacity = String(op);
      for (const t of c.truth) t.style.display = show ? "" : "none";
    }
  }

  function overlays() {
    const m = model.get("method");
    const srcs = model.get("_overlays")[m] || [];
    const limits = model.get("_limits")[m] || [];
    for (const c of cells) {
      c.overlay.src = png(srcs[c.index]);
      c.caption.textContent = `${c.label} · ±${Number(limits[c.index]).toPrecision(3)}`;
    }
    for (const b of methods.children) b.classList.toggle("xih-active", b.dataset.method === m);
    root.dataset.method = m;
  }

  function markSelected() {
    const sel = model.get("selected");
    for (const c of cells) c.fig.classList.toggle("xih-selected", c.index === sel);
  }

  function build() {
    const items = model.get("_items"), size = model.get("size");
    const ps = model.get("page_size"), pages = Math.max(1, Math.ceil(items.length / ps));
    const page = Math.min(model.get("page"), pages - 1);
    pageText.textContent = `page ${page + 1} / ${pages}`;
    prev.disabled = page === 0;
    next.disabled = page >= pages - 1;
    cells = [];
    const frag = document.createDocumentFragment();
    for (let i = page * ps; i < Math.min(items.length, (page + 1) * ps); i++) {
      const it = items[i];
      const fig = el("figure", "xih-cell");
      fig.dataset.index = String(i);
      const box = el("div", "xih-stack");
      box.style.width = box.style.height = `${size}px`;
      const img = el("img", "xih-image"); img.src = png(it.image); img.alt = it.label;
      const overlay = el("img", "xih-overlay"); overlay.alt = "";
      box.append(img, overlay);
      const truthEls = [];
      if (it.mask) {
        const m = el("img", "xih-truth-mask"); m.src = png(it.mask); m.alt = "";
        box.appendChild(m); truthEls.push(m);
      }
      if (it.boxes.length) {
        const svg = document.createElementNS(SVG, "svg");
        svg.setAttribute("class", "xih-truth-boxes");
        svg.setAttribute("viewBox", `0 0 ${it.w} ${it.h}`);
        svg.setAttribute("preserveAspectRatio", "none");
        for (const [x0, y0, x1, y1] of it.boxes) {
          const r = document.createElementNS(SVG, "rect");
          r.setAttribute("x", x0); r.setAttribute("y", y0);
          r.setAttribute("width", x1 - x0); r.setAttribute("height", y1 - y0);
          svg.appendChild(r);
        }
        box.appendChild(svg); truthEls.push(svg);
      }
      const caption = el("figcaption", "xih-caption");
      fig.append(box, caption);
      fig.addEventListener("click", () => { model.set("selected", i); model.save_changes(); });
      frag.appendChild(fig);
      cells.push({ index: i, overlay, truth: truthEls, caption, label: it.label, fig });
    }
    grid.replaceChildren(frag);
    title.textContent = model.get("title") || "";
    overlays();
    style();
    markSelected();
  }

  opacity.addEventListener("input", () => {
    for (const c of cells) c.overlay.style.opacity = opacity.value;  // immediate, before the round trip
    model.set("opacity", Number(opacity.value)); model.save_changes();
  });
  truth.addEventListener("change", () => { model.set("show_truth", truth.checked); model.save_changes(); });
  const go = (d) => () => {
    const pages = Math.max(1, Math.ceil(model.get("_items").length / model.get("page_size")));
    const p = Math.min(pages - 1, Math.max(0, model.get("page") + d));
    model.set("page", p); model.save_changes();
  };
  prev.addEventListener("click", go(-1));
  next.addEventListener("click", go(1));

  const handlers = [
    ["change:_items", build], ["change:page", build], ["change:page_size", build], ["change:size", build],
    ["change:method", overlays], ["change:_overlays", overlays], ["change:opacity", style],
    ["change:show_truth", style], ["change:selected", markSelected],
    ["change:methods", () => { buildMethods(); overlays(); }],
  ];
  for (const [ev, fn] of handlers) model.on(ev, fn);
  buildMethods();
  build();
  return () => { for (const [ev, fn] of handlers) model.off(ev, fn); };
}

export default { render };
