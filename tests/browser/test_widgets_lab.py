"""The three views in a real JupyterLab 4 + Chromium: DOM, colours, hover, switches, slider, clicks
read back by the kernel. The tests share one page (the demo notebook run once) and run in order."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from xattr_nb.interventions import Circuit
from xattr_nb.widgets import css_rgb_of

pytestmark = pytest.mark.e2e


def f32(xs: list[float]) -> list[float]:
    """The demo builds float32 Attributions: the view shows (and colours) the float32 values."""
    return np.asarray(xs, dtype=np.float32).astype(float).tolist()


TOKENS = ["[CLS]", "the", "film", "was", "wonder", "##ful", "but", "far", "too", "long", "[SEP]"]
IG = [0.0, 0.05, 0.2, -0.1, 0.6, 0.4, -0.5, -0.25, -0.3, -1.0, 0.0]
SAL = [0.1, 0.05, 0.2, 0.1, 0.8, 0.5, 0.2, 0.1, 0.1, 0.3, 0.1]


def view(page, root: str, title: str):
    return page.locator(root, has=page.locator(f"{root[:4]}-title", has_text=title)).first


def bg_colours(spans) -> list[str]:
    return spans.evaluate_all("els => els.map(e => getComputedStyle(e).backgroundColor)")


def test_token_heatmap_spans_and_colours(demo_page, shots):
    th = view(demo_page, ".xth-live", "sentiment")
    spans = th.locator(".xth-tok")
    assert spans.count() == len(TOKENS)
    assert spans.all_inner_texts() == TOKENS
    got = bg_colours(spans)
    # IG's limit is max |score| = 1: "long" (-1) is the darkest blue, "wonder" (0.6) the 4th red anchor,
    # a zero score the neutral grey-white of RdBu.
    assert got[9] == "rgb(5, 48, 97)"
    assert got[4] == "rgb(214, 96, 77)"
    assert got[0] == got[10] == "rgb(247, 247, 247)"
    assert got == [css_rgb_of(s) for s in f32(IG)]
    th.scroll_into_view_if_needed()
    th.screenshot(path=str(shots / "token_heatmap.png"))


def test_token_hover_shows_token_exact_score_and_rank(demo_page, shots):
    th = view(demo_page, ".xth-live", "sentiment")
    th.locator(".xth-tok").nth(6).hover()  # "but", IG -0.5: 2nd largest |score| after "long"
    tip = th.locator(".xth-tip.xth-tip-on")
    tip.wait_for(state="visible")
    text = tip.inner_text()
    assert text.startswith("but ·") and "IG: -0.5 ·" in text and "rank 3 / 11 by |score|" in text, text
    th.screenshot(path=str(shots / "token_heatmap_hover.png"))


def test_token_method_switch_recolours(demo_page, shots):
    th = view(demo_page, ".xth-live", "sentiment")
    spans = th.locator(".xth-tok")
    before = bg_colours(spans)
    th.locator(".xth-method", has_text="Saliency").click()
    demo_page.wait_for_function("el => el.dataset.method === 'Saliency'", arg=th.element_handle(), timeout=10_000)
    after = bg_colours(spans)
    assert after != before
    assert after == [css_rgb_of(s / f32([0.8])[0]) for s in f32(SAL)]  # Saliency's own limit: max |score| = 0.8
    assert after[4] == "rgb(103, 0, 31)"  # "wonder" carries the maximum
    th.locator(".xth-tok").nth(4).click()  # select "wonder": read back by the kernel at the end
    # Merging sub-words is a round trip through Python: "wonder" + "##ful" become one word.
    th.locator(".xth-merge").check()
    demo_page.wait_for_function("el => el.dataset.n === '10'", arg=th.element_handle(), timeout=10_000)
    assert "wonderful" in th.locator(".xth-tok").all_inner_texts()
    assert th.locator(".xth-tok.xth-selected").inner_text() == "wonderful"
    th.screenshot(path=str(shots / "token_heatmap_saliency_merged.png"))


def test_2000_tokens_render_and_stay_responsive(demo_page, shots):
    big = view(demo_page, ".xth-live", "2,000 tokens")
    spans = big.locator(".xth-tok")
    assert spans.count() == 2000
    build_ms = float(big.get_attribute("data-build-ms"))
    t0 = time.perf_counter()
    big.locator(".xth-method", has_text="cos").click()
    demo_page.wait_for_function("el => el.dataset.method === 'cos'", arg=big.element_handle(), timeout=10_000)
    switch_s = time.perf_counter() - t0
    paint_ms = float(big.get_attribute("data-paint-ms"))
    colours = bg_colours(spans)
    assert colours[0] == "rgb(103, 0, 31)"  # cos(0) = 1 = the maximum
    assert len(set(colours)) > 50
    # Generous bounds for a shared 2-core CI box; a rebuild-per-switch design takes seconds here.
    assert build_ms < 1500 and paint_ms < 300 and switch_s < 3, (build_ms, paint_ms, switch_s)
    spans.nth(1234).hover()
    assert "w1234" in big.locator(".xth-tip").inner_text()
    print(f"\n2,000 tokens: build {build_ms} ms, recolour {paint_ms} ms, click-to-recoloured {switch_s:.3f} s")
    big.scroll_into_view_if_needed()
    demo_page.screenshot(path=str(shots / "token_heatmap_2000.png"))


def test_10000_tokens_and_64_images_render(demo_page, shots):
    """Widgets at scale: measured and reported (``widgets_at_scale.json`` beside the screenshots), not
    asserted on time; what is asserted is that everything renders and reacts."""
    import json

    huge = view(demo_page, ".xth-live", "10,000 tokens")
    huge.scroll_into_view_if_needed()
    spans = huge.locator(".xth-tok")
    assert spans.count() == 10_000
    figures = {"tokens_build_ms": float(huge.get_attribute("data-build-ms"))}
    t0 = time.perf_counter()
    huge.locator(".xth-method", has_text="cos").click()
    demo_page.wait_for_function("el => el.dataset.method === 'cos'", arg=huge.element_handle(), timeout=30_000)
    figures["tokens_click_to_recoloured_s"] = round(time.perf_counter() - t0, 3)
    figures["tokens_recolour_ms"] = float(huge.get_attribute("data-paint-ms"))
    spans.nth(9876).hover()
    assert "t9876" in huge.locator(".xth-tip").inner_text()
    many = view(demo_page, ".xih-live", "64 images")
    many.scroll_into_view_if_needed()
    assert many.locator(".xih-overlay").count() == 16
    pages = []
    for k in range(3):
        t0 = time.perf_counter()
        many.locator(".xih-next").click()
        demo_page.wait_for_function(
            f"el => el.querySelector('.xih-cell').dataset.index === '{16 * (k + 1)}'",
            arg=many.element_handle(),
            timeout=30_000,
        )
        pages.append(round(time.perf_counter() - t0, 3))
    assert many.locator(".xih-page").inner_text() == "page 4 / 4"
    figures["images_next_page_s"] = pages
    t0 = time.perf_counter()
    many.locator(".xih-method", has_text="b").first.click()
    demo_page.wait_for_function("el => el.dataset.method === 'b'", arg=many.element_handle(), timeout=30_000)
    figures["images_method_switch_s"] = round(time.perf_counter() - t0, 3)
    (shots / "widgets_at_scale.json").write_text(json.dumps(figures, indent=1))
    print(f"\nwidgets at scale: {figures}")
    many.screenshot(path=str(shots / "image_heatmap_64.png"))


def test_image_heatmap_overlay_switch_opacity_truth_paging(demo_page, shots):
    ih = view(demo_page, ".xih-live", "shapes")
    ih.scroll_into_view_if_needed()
    overlays = ih.locator(".xih-overlay")
    assert overlays.count() == 4  # page_size
    srcs = [o.get_attribute("src") for o in overlays.all()]
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert ih.locator(".xih-truth-mask").count() == 4 and ih.locator(".xih-truth-boxes rect").count() == 4
    ih.screenshot(path=str(shots / "image_heatmap.png"))
    ih.locator(".xih-method", has_text="patches").click()
    demo_page.wait_for_function("el => el.dataset.method === 'patches'", arg=ih.element_handle(), timeout=10_000)
    assert [o.get_attribute("src") for o in overlays.all()] != srcs
    ih.locator(".xih-opacity").evaluate(
        "e => { e.value = '0.3'; e.dispatchEvent(new Event('input', {bubbles: true})); }"
    )
    assert overlays.evaluate_all("els => els.map(e => getComputedStyle(e).opacity)") == ["0.3"] * 4
    ih.locator(".xih-truth").uncheck()
    assert (
        ih.locator(".xih-truth-mask").evaluate_all("els => els.map(e => getComputedStyle(e).display)") == ["none"] * 4
    )
    ih.screenshot(path=str(shots / "image_heatmap_patches_faint.png"))
    ih.locator(".xih-truth").check()
    ih.locator(".xih-next").click()
    demo_page.wait_for_function(
        "el => el.querySelectorAll('.xih-cell').length === 2", arg=ih.element_handle(), timeout=10_000
    )
    assert [c.get_attribute("data-index") for c in ih.locator(".xih-cell").all()] == ["4", "5"]
    assert ih.locator(".xih-page").inner_text() == "page 2 / 2"
    ih.locator(".xih-cell").nth(1).click()
    ih.screenshot(path=str(shots / "image_heatmap_page2.png"))


def test_circuit_nodes_edges_slider_and_click(demo_page, shots):
    circ = Circuit.random(12, 12, seed=0)  # the demo's circuit, rebuilt here (seeded)
    cv = view(demo_page, ".xcv-live", "12 x 12")
    cv.scroll_into_view_if_needed()
    assert cv.locator(".xcv-node").count() == len(circ.nodes) == 158
    assert cv.locator(".xcv-head").count() == 144 and cv.locator(".xcv-mlp").count() == 12
    edges = cv.locator(".xcv-edge")
    assert edges.count() == len(circ.edges)
    visible = "els => els.filter(e => getComputedStyle(e).display !== 'none').length"
    assert edges.evaluate_all(visible) == len(circ.edges)
    cv.screenshot(path=str(shots / "circuit_view.png"))
    value = cv.locator(".xcv-threshold").evaluate(
        "e => { e.value = '1.5'; e.dispatchEvent(new Event('input', {bubbles: true})); return Number(e.value); }"
    )
    expected = sum(abs(e.weight) >= value for e in circ.edges)
    assert 0 < expected < len(circ.edges) / 2
    assert edges.evaluate_all(visible) == expected
    assert cv.get_attribute("data-shown-edges") == str(expected)
    assert cv.locator(".xcv-node.xcv-faded").count() > 0
    node = cv.locator('.xcv-node[data-name="L3.H5"]')
    node.hover()
    tip = cv.locator(".xcv-tip")
    tip.wait_for(state="visible")
    assert "L3.H5" in tip.inner_text() and "head 5 of layer 3" in tip.inner_text()
    node.click()
    assert cv.locator(".xcv-node.xcv-selected").get_attribute("data-name") == "L3.H5"
    cv.screenshot(path=str(shots / "circuit_view_pruned_selected.png"))


def test_clicks_and_controls_reach_the_kernel(demo_page, shots):
    """A later cell reads back what the browser did: selected token, image and node, threshold, merge."""
    run_new_cell = demo_page.run_new_cell
    run_new_cell(
        demo_page,
        "print('picked', th.selected, th.selection['text'], th.method, ih.selected, ih.page, ih.method, "
        "round(ih.opacity, 2), cv.selected, cv.details()['node'].score == circ.node('L3.H5').score, "
        "len(cv.visible_edges()))",
    )
    out = demo_page.locator(".jp-RenderedText", has_text="picked")
    out.wait_for(timeout=30_000)
    circ = Circuit.random(12, 12, seed=0)
    text = out.inner_text().strip()
    m = re.search(r"picked .*", text)
    assert m, text
    parts = m.group(0).split()
    assert parts[1:9] == ["4", "wonderful", "Saliency", "5", "1", "patches", "0.3", "L3.H5"], parts
    assert parts[9] == "True"
    threshold = float(view(demo_page, ".xcv-live", "12 x 12").locator(".xcv-threshold").input_value())
    assert int(parts[10]) == sum(abs(e.weight) >= threshold for e in circ.edges)
    out.scroll_into_view_if_needed()
    demo_page.screenshot(path=str(shots / "kernel_readback.png"))
    errors = [e for e in demo_page.errors if "favicon" not in e]
    assert not errors, errors
    print(f"\ndemo notebook ready after {demo_page.t_ready:.1f} s")
