"""Widgets, Python side: colour scale, traitlets, inputs (one test per bad input), static fallbacks, assets."""

from __future__ import annotations

import base64
import io
import json
import math
import re
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch
from PIL import Image

from xattr_nb.attribution.result import Attribution
from xattr_nb.checks import InputError
from xattr_nb.interventions import Circuit
from xattr_nb.widgets import (
    CircuitView,
    ImageHeatmap,
    TokenHeatmap,
    asset_dir,
    circuit_layout,
    css_rgb_of,
    diverging_rgb,
    merge_subwords,
    rank_by_magnitude,
    scale_limit,
)
from xattr_nb.widgets._common import ANCHORS, diverging_rgb_array, find_asset_dir

REPO = Path(__file__).resolve().parents[2]
TOKENS = ["[CLS]", "great", "<script>", "film", "[SEP]"]
IG = [0.0, 1.0, -0.5, 0.25, 0.0]


def _png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def tok_attr(scores, tokens=TOKENS, method="IG") -> Attribution:
    return Attribution(
        torch.tensor([scores], dtype=torch.float64), "tokens", method, torch.tensor([1]), labels=[tokens]
    )


# ------------------------------------------------------------------ colour scale and assets


def test_diverging_scale_hits_the_rdbu_anchors_and_interpolates():
    assert diverging_rgb(-1.0) == (5, 48, 97)
    assert diverging_rgb(0.0) == (247, 247, 247)
    assert diverging_rgb(1.0) == (103, 0, 31)
    assert diverging_rgb(0.5) == (229, 131, 104)  # halfway between (244,165,130) and (214,96,77), rounded half up
    assert diverging_rgb(7.0) == diverging_rgb(1.0) and diverging_rgb(math.nan) == diverging_rgb(0.0)
    t = np.linspace(-1.2, 1.2, 97)
    assert diverging_rgb_array(t).tolist() == [list(diverging_rgb(float(x))) for x in t]
    assert css_rgb_of(-1.0) == "rgb(5, 48, 97)"


def test_es_modules_use_the_same_anchors_and_fetch_nothing():
    for name in ("token_heatmap.js", "image_heatmap.js"):
        src = (asset_dir() / name).read_text()
        m = re.search(r"const ANCHORS = (\[.*?\]\]);", src, re.S)
        assert m and json.loads(m.group(1)) == [list(a) for a in ANCHORS], name
    for name in ("token_heatmap.js", "image_heatmap.js", "circuit_view.js"):
        src = (asset_dir() / name).read_text()
        assert "export default { render }" in src
        assert not re.search(r"^\s*import\s", src, re.M) and "http://" not in src.replace(
            "http://www.w3.org/2000/svg", ""
        )
        assert "https://" not in src and "fetch(" not in src


def test_assets_found_in_a_wheel_layout_first_then_in_the_checkout(tmp_path):
    names = ("token_heatmap.js", "image_heatmap.js", "circuit_view.js")
    pkg = tmp_path / "site" / "xattr_nb"
    (pkg / "_widgets").mkdir(parents=True)
    (tmp_path / "site" / "widgets").mkdir()
    for n in names:
        (pkg / "_widgets" / n).write_text("//")
        (tmp_path / "site" / "widgets" / n).write_text("//")
    assert find_asset_dir(pkg) == pkg / "_widgets"
    for n in names:
        (pkg / "_widgets" / n).unlink()
    assert find_asset_dir(pkg) == tmp_path / "site" / "widgets"
    assert asset_dir() in (REPO / "widgets", REPO / "xattr_nb" / "_widgets")


def test_assets_missing_is_a_clear_error(tmp_path):
    with pytest.raises(ImportError, match="cannot find its front-end files"):
        find_asset_dir(tmp_path / "xattr_nb")


def test_wheel_packs_the_widgets_folder():
    cfg = (REPO / "pyproject.toml").read_text()  # (tomllib is 3.11+; the project supports 3.10)
    section = cfg.split("[tool.hatch.build.targets.wheel.force-include]", 1)[1].split("[", 1)[0]
    assert '"widgets" = "xattr_nb/_widgets"' in section
    for n in ("token_heatmap", "image_heatmap", "circuit_view"):
        assert (REPO / "widgets" / f"{n}.js").is_file() and (REPO / "widgets" / f"{n}.css").is_file()


def test_scale_limits():
    vals = [float(i) for i in range(1, 101)]
    assert scale_limit(vals, "maxabs") == 100.0
    assert scale_limit([-3.0, 1.0], "maxabs") == 3.0
    assert scale_limit([1.0], "shared", [[-5.0, 2.0]]) == 5.0
    assert scale_limit(vals, "p99") == 99.0  # nearest rank: the 99th of 100
    assert scale_limit([0.0, 0.0], "maxabs") == 1.0


# ------------------------------------------------------------------ TokenHeatmap


def test_token_heatmap_from_lists_syncs_data_ranks_and_colours():
    w = TokenHeatmap(TOKENS, {"IG": IG, "Sal": [1, 2, 3, 4, 5]})
    assert w.methods == ["IG", "Sal"] and w.method == "IG" and w.selected == -1
    assert w._data["units"] == TOKENS and w._data["scores"]["IG"] == IG
    assert w._data["ranks"]["IG"] == [4, 1, 2, 3, 5]  # by |score|, ties in position order
    assert w.colours() == ["rgb(247, 247, 247)", "rgb(103, 0, 31)", css_rgb_of(-0.5), css_rgb_of(0.25), css_rgb_of(0)]
    w.method = "Sal"
    assert w.colours()[-1] == "rgb(103, 0, 31)" and w.colour_limit() == 5.0
    w.normalize = "shared"
    assert w.colour_limit("IG") == 5.0


def test_token_heatmap_accepts_attributions_and_names_methods_after_them():
    w = TokenHeatmap(tok_attr(IG))
    assert w.methods == ["IG"] and w.tokens == TOKENS and w.scores == {"IG": IG}
    w2 = TokenHeatmap({"IG": tok_attr(IG), "Occlusion": tok_attr([1, 0, 0, 0, 0], method="occ")}, method="Occlusion")
    assert w2.methods == ["IG", "Occlusion"] and w2.method == "Occlusion"
    assert TokenHeatmap(list(TOKENS), torch.tensor(IG)).scores == {"scores": IG}


def test_merge_subwords_wordpiece_and_bpe():
    assert merge_subwords(["[CLS]", "token", "##s", "are", "great", "[SEP]"]) == [
        (0, 1, "[CLS]"),
        (1, 3, "tokens"),
        (3, 4, "are"),
        (4, 5, "great"),
        (5, 6, "[SEP]"),
    ]
    bpe = ["Ġhigh", "light", "Ġthe", ",", "Ġtoken", "s", "<|endoftext|>"]
    assert [u[2] for u in merge_subwords(bpe)] == ["highlight", "the", ",", "tokens", "<|endoftext|>"]
    assert merge_subwords(["##s"]) == [(0, 1, "##s")]  # nothing to continue


def test_merged_words_sum_their_pieces_and_selection_maps_back():
    toks = ["[CLS]", "wonder", "##ful", "film", "[SEP]"]
    w = TokenHeatmap(toks, [0.0, 0.5, 0.25, -0.5, 0.0], merge_subwords=True)
    assert w._data["units"] == ["[CLS]", "wonderful", "film", "[SEP]"]
    assert w._data["scores"]["scores"] == [0.0, 0.75, -0.5, 0.0] and w._data["starts"] == [0, 1, 3, 4]
    w.selected = 2  # the "##ful" piece: part of "wonderful"
    assert w.selection == {
        "index": 1,
        "text": "wonderful",
        "tokens": (1, 3),
        "scores": {"scores": 0.75},
        "ranks": {"scores": 1},
    }
    w.merge_subwords = False
    assert len(w._data["units"]) == 5 and w.selection["text"] == "##ful"


def test_selected_is_observable():
    w = TokenHeatmap(TOKENS, IG)
    seen = []
    w.observe(lambda ch: seen.append(ch["new"]), names="selected")
    w.selected = 3
    assert seen == [3] and w.selection["text"] == "film"


def test_rank_by_magnitude():
    assert rank_by_magnitude([0.1, -3.0, 2.0, -0.1]) == [3, 1, 2, 4]


def test_token_heatmap_fallbacks_are_deterministic_escaped_and_coloured():
    w = TokenHeatmap(TOKENS, {"IG": IG, "Sal": [1, 2, 3, 4, 5]}, title="t")
    data, _meta = w._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in data
    assert data["text/plain"] == "TokenHeatmap(5 tokens, methods=['IG', 'Sal'], method='IG', normalize='maxabs')"
    assert repr(w) == data["text/plain"] and "0x" not in data["text/plain"]
    html = data["text/html"]
    assert "&lt;script&gt;" in html and "<script>" not in html
    assert html.count("<span ") == 5 and "background:#67001f" in html  # "great" = the max = darkest red
    assert "(also: Sal)" in html and "rank 1 / 5" in html
    big = TokenHeatmap([f"w{i}" for i in range(1000)], list(np.linspace(-1, 1, 1000)), static_limit=100)
    assert big._static_html().count("<span ") == 100 and "the first 100 of 1000 shown" in big._static_html()


def test_token_rejects_empty_tokens():
    with pytest.raises(InputError, match="`tokens` is empty"):
        TokenHeatmap([], [])


def test_token_rejects_length_mismatch():
    with pytest.raises(InputError, match=r"`scores` has 4 scores but there are 5 tokens"):
        TokenHeatmap(TOKENS, IG[:4])


def test_token_rejects_nan_scores_naming_the_method():
    with pytest.raises(InputError, match=r"`scores\['IG'\]` contains 1 NaN"):
        TokenHeatmap(TOKENS, {"IG": [0.0, math.nan, 0, 0, 0]})


def test_token_rejects_non_string_token():
    with pytest.raises(InputError, match=r"`tokens\[1\]` must be a str"):
        TokenHeatmap(["a", 3], [0.0, 1.0])


def test_token_rejects_missing_scores():
    with pytest.raises(InputError, match="`scores` is required"):
        TokenHeatmap(TOKENS)


def test_token_rejects_empty_score_dict():
    with pytest.raises(InputError, match="`scores` is an empty dict"):
        TokenHeatmap(TOKENS, {})


def test_token_rejects_pixel_attribution():
    a = Attribution(torch.zeros(1, 4, 4), "pixels", "ig", torch.tensor([0]))
    with pytest.raises(InputError, match="kind 'tokens'; this one scores pixels"):
        TokenHeatmap(a)


def test_token_rejects_attributions_over_different_tokens():
    other = tok_attr(IG, tokens=["a", "b", "c", "d", "e"])
    with pytest.raises(InputError, match=r"`tokens\['B'\]` explains different tokens"):
        TokenHeatmap({"A": tok_attr(IG), "B": other})


def test_token_rejects_scores_twice():
    with pytest.raises(InputError, match="do not pass them too"):
        TokenHeatmap(tok_attr(IG), IG)


def test_token_rejects_example_out_of_range():
    with pytest.raises(InputError, match="`example`"):
        TokenHeatmap(tok_attr(IG), example=1)


def test_token_rejects_unknown_method_and_normalize_and_selection():
    w = TokenHeatmap(TOKENS, IG)
    with pytest.raises(InputError, match="`method` must be one of"):
        w.method = "nope"
    with pytest.raises(InputError, match="`normalize`"):
        w.normalize = "zscore"
    with pytest.raises(InputError, match="`selected`"):
        w.selected = 5


# ------------------------------------------------------------------ ImageHeatmap


def _images(b=5, hw=8):
    img = torch.zeros(b, 3, hw, hw)
    img[:, 0] = 1.0  # red images
    m = torch.zeros(b, hw, hw)
    m[:, 2, 3] = 2.0  # one hot pixel, the maximum
    m[:, 5, 5] = -1.0
    masks = torch.zeros(b, hw, hw, dtype=torch.bool)
    masks[:, 2:5, 2:5] = True
    return img, m, masks


def test_image_heatmap_sends_pngs_and_transparent_zero_overlays():
    img, m, masks = _images()
    w = ImageHeatmap(img, {"a": m, "b": -m}, masks=masks, boxes=[[[1, 1, 4, 4]]] * 5, page_size=2)
    assert w.methods == ["a", "b"] and len(w._items) == 5 and (w.page, w.n_pages) == (0, 3)
    assert _png(w._items[0]["image"])[0, 0].tolist() == [255, 0, 0]
    ov = _png(w._overlays["a"][0])
    assert ov.shape == (8, 8, 4)
    assert ov[2, 3].tolist() == [103, 0, 31, 255]  # the maximum: darkest red, opaque
    assert ov[5, 5].tolist() == [*diverging_rgb(-0.5), 128]  # half the limit: half alpha
    assert ov[0, 0, 3] == 0  # nothing attributed: transparent
    assert w.limit(0) == 2.0 and w._items[0]["boxes"] == [[1.0, 1.0, 4.0, 4.0]]
    outline = _png(w._items[0]["mask"])[..., 3] > 0
    assert outline[2, 2] and outline[2, 4] and not outline[3, 3] and not outline[0, 0]  # the ring, not the inside
    assert w.page_indices(2) == [4]
    json.dumps(w._items)  # everything synced is plain JSON


def test_image_heatmap_upsamples_patches_and_paints_regions():
    img = torch.rand(2, 3, 8, 8)
    patches = Attribution(torch.tensor([[[1.0, 0.0], [0.0, -1.0]]] * 2), "patches", "vit", torch.tensor([0, 0]))
    regions = torch.zeros(2, 8, 8, dtype=torch.bool)
    regions[0, :, :4] = True
    regions[1, :, 4:] = True
    reg = Attribution(
        torch.tensor([[0.5, -0.25]] * 2), "regions", "lime", torch.tensor([0, 0]), meta={"regions": regions}
    )
    w = ImageHeatmap(img, {"p": patches, "r": reg})
    p = w._maps_np["p"][0]
    assert p[:4, :4].min() == 1.0 and p[4:, 4:].max() == -1.0 and p[:4, 4:].max() == 0.0  # 4x4 blocks
    r = w._maps_np["r"][1]
    assert r[0, 0] == 0.5 and r[7, 7] == -0.25


def test_image_heatmap_traits_and_fallback():
    img, m, masks = _images(b=3)
    w = ImageHeatmap(img, m, masks=masks, labels=["x", "y", "z"], page_size=2, title="t")
    assert w.methods == ["attribution"]
    w.opacity = 0.0
    assert w.composite(0)[0, 0].tolist() == [255, 0, 0] and w.composite(0)[2, 2].tolist() == [0, 230, 0]
    data, _ = w._repr_mimebundle_()
    assert data["text/plain"] == "ImageHeatmap(3 images 8x8, methods=['attribution'], method='attribution', page 1/2)"
    assert data["text/html"].count("<img ") == 2 and "x · ±2" in data["text/html"]
    w.page = 1
    assert w._static_html().count("<img ") == 1
    with pytest.raises(InputError, match="`page`"):
        w.page = 2
    with pytest.raises(InputError, match="`opacity`"):
        w.opacity = 1.5


def test_image_accepts_an_attribution_directly():
    img, m, _ = _images(b=2)
    w = ImageHeatmap(img, Attribution(m, "pixels", "saliency", torch.tensor([0, 1])))
    assert w.methods == ["saliency"]


def test_image_rejects_batch_mismatch():
    img, m, _ = _images()
    with pytest.raises(InputError, match=r"`maps\['a'\]` has 4 maps but `images` has 5"):
        ImageHeatmap(img, {"a": m[:4]})


def test_image_rejects_nan_map():
    img, m, _ = _images()
    m[0, 0, 0] = math.nan
    with pytest.raises(InputError, match=r"`maps\['a'\]` contains 1 NaN"):
        ImageHeatmap(img, {"a": m})


def test_image_rejects_map_of_other_size():
    img, _, _ = _images()
    with pytest.raises(InputError, match=r"`maps\['a'\]` is \(4, 4\) per image but the images are \(8, 8\)"):
        ImageHeatmap(img, {"a": torch.zeros(5, 4, 4)})


def test_image_rejects_empty_maps():
    img, _, _ = _images()
    with pytest.raises(InputError, match="`maps` must be"):
        ImageHeatmap(img, {})


def test_image_rejects_bad_channels():
    with pytest.raises(InputError, match="1 or 3 channels"):
        ImageHeatmap(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4))


def test_image_rejects_box_outside_image():
    img, m, _ = _images(b=1)
    with pytest.raises(InputError, match=r"`boxes\[0\]\[0\]`.*not a box inside the 8x8 image"):
        ImageHeatmap(img, m, boxes=[[[0, 0, 9, 4]]])


def test_image_rejects_mask_shape():
    img, m, _ = _images(b=2)
    with pytest.raises(InputError, match="`masks` must have shape"):
        ImageHeatmap(img, m, masks=torch.zeros(2, 4, 4, dtype=torch.bool))


def test_image_rejects_labels_length():
    img, m, _ = _images(b=2)
    with pytest.raises(InputError, match="`labels` must be one caption per image"):
        ImageHeatmap(img, m, labels=["only one"])


def test_image_rejects_regions_without_masks():
    img = torch.rand(1, 3, 8, 8)
    with pytest.raises(InputError, match=r"has no meta\['regions'\]"):
        ImageHeatmap(img, Attribution(torch.ones(1, 3), "regions", "lime", torch.tensor([0])))


def test_image_rejects_token_attribution():
    with pytest.raises(InputError, match="must score pixels, patches or regions"):
        ImageHeatmap(torch.rand(1, 3, 8, 8), tok_attr(IG))


# ------------------------------------------------------------------ CircuitView


def _circuit() -> Circuit:
    return Circuit.from_scores(
        {"embed": 0.0, "L0.H0": 2.0, "L0.H2": -1.0, "L0.MLP": 0.5, "L1.H1": 0.0, "logits": 0.0},
        {("embed", "L0.H0"): 1.0, ("L0.H0", "L0.MLP"): -4.0, ("L0.MLP", "L1.H1"): 2.0, ("L1.H1", "logits"): 0.5},
    )


def test_circuit_layout_places_components_by_layer_and_head():
    g = circuit_layout(_circuit())
    pos = {n["name"]: (n["x"], n["y"], n["r"]) for n in g["nodes"]}
    assert pos["embed"][0] < pos["L0.H0"][0] < pos["L0.MLP"][0] < pos["L1.H1"][0] < pos["logits"][0]
    assert pos["L0.H0"][1] < pos["L1.H1"][1] < pos["L0.H2"][1]  # head index = row
    assert pos["L0.H0"][2] == 10.0 and pos["embed"][2] == 3.0  # radius from 3 (score 0) to 10 (the max |score|)
    widths = {(e["src"], e["dst"]): e["width"] for e in g["edges"]}
    assert widths[("L0.H0", "L0.MLP")] == 4.0 and widths[("embed", "L0.H0")] == 1.45
    strokes = {(e["src"], e["dst"]): e["stroke"] for e in g["edges"]}
    assert strokes[("L0.H0", "L0.MLP")] == css_rgb_of(-0.85) and strokes[("embed", "L0.H0")] == css_rgb_of(0.85)
    fills = {n["name"]: n["fill"] for n in g["nodes"]}
    assert fills["L0.H0"] == "rgb(103, 0, 31)" and fills["L0.H2"] == css_rgb_of(-0.5)
    assert (g["n_layers"], g["n_heads"], g["max_weight"]) == (2, 3, 4.0)


def test_circuit_view_threshold_selection_and_details():
    v = CircuitView(_circuit(), threshold=1.0)
    assert [(e.src, e.dst) for e in v.visible_edges()] == [("embed", "L0.H0"), ("L0.H0", "L0.MLP"), ("L0.MLP", "L1.H1")]
    assert len(v.visible_edges(3.0)) == 1
    v.selected = "L0.MLP"
    assert v.selected_node.score == 0.5
    d = v.details()
    assert [e.src for e in d["in"]] == ["L0.H0"] and [e.dst for e in d["out"]] == ["L1.H1"]
    assert v._plain() == "CircuitView(6 nodes, 4 edges, threshold=1: 3 shown, selected='L0.MLP')"
    html = v._repr_mimebundle_()[0]["text/html"]
    assert html.count("<path ") == 3 and html.count("<circle ") == 5 and html.count("<rect ") == 1
    v.threshold = 0.0
    assert v.svg().count("<path ") == 4


def test_circuit_view_accepts_networkx_and_12x12_layout():
    v = CircuitView(_circuit().to_networkx())
    assert len(v._graph["nodes"]) == 6
    big = CircuitView(Circuit.random(12, 12, seed=0))
    xs = {(n["x"], n["y"]) for n in big._graph["nodes"]}
    assert len(xs) == len(big._graph["nodes"]) == 158  # no two nodes on the same spot
    assert len(json.dumps(big._graph)) < 150_000


def _cnn_circuit() -> Circuit:
    """A causal-paths-like graph: two channels of conv1 into one of conv2, a dense unit, the logits."""
    return Circuit.from_scores(
        {"L0.C3": 0.5, "L0.C12": 0.25, "L1.C7": 1.0, "L2.U4": -0.5},
        {("L0.C3", "L1.C7"): 0.4, ("L0.C12", "L1.C7"): 0.1, ("L1.C7", "L2.U4"): -0.2, ("L2.U4", "logits"): 0.3},
        meta={"layer_names": ["conv1", "conv2", "fc"]},
    )


def test_circuit_layout_stacks_channels_and_units_per_layer():
    g = circuit_layout(_cnn_circuit())
    by = {n["name"]: n for n in g["nodes"]}
    assert by["L0.C3"]["x"] == by["L0.C12"]["x"] < by["L1.C7"]["x"] < by["L2.U4"]["x"] < by["logits"]["x"]
    assert by["L0.C3"]["y"] < by["L0.C12"]["y"]  # index order inside the layer
    assert by["L1.C7"]["y"] == by["logits"]["y"] == (by["L0.C3"]["y"] + by["L0.C12"]["y"]) / 2  # centred
    assert (by["L0.C12"]["label"], by["L2.U4"]["label"], by["logits"]["label"]) == ("C12", "U4", "logits")
    assert by["L0.C12"]["desc"] == "channel 12 of conv1" and by["L2.U4"]["desc"] == "unit 4 of fc"
    assert all(by[n]["component"] and by[n]["shape"] == "circle" for n in ("L0.C3", "L2.U4"))
    assert not by["logits"]["component"]
    assert g["col_labels"] == ["conv1", "conv2", "fc"] and g["row_y"] == [] and g["n_heads"] == 0
    assert len({(n["x"], n["y"]) for n in g["nodes"]}) == 5
    heads = circuit_layout(_circuit())  # transformer circuits: layer labels and kinds as before
    assert heads["col_labels"] == ["L0", "L1"]
    assert {n["name"]: n["desc"] for n in heads["nodes"]}["L0.H2"] == "head 2 of layer 0"
    assert {n["name"]: n["shape"] for n in heads["nodes"]}["L0.MLP"] == "rect"


def test_circuit_view_static_svg_draws_channels_with_labels_and_fades_them():
    v = CircuitView(_cnn_circuit(), threshold=0.35)
    svg = v.svg()
    assert svg.count("<circle ") == 5 and svg.count("<rect ") == 0 and svg.count("<path ") == 1
    for text in (">conv1</text>", ">conv2</text>", ">fc</text>", ">C3</text>", ">C12</text>", ">U4</text>"):
        assert text in svg, text
    assert ">H0</text>" not in svg  # no head rows
    assert svg.count('opacity="0.25"') == 4  # C12 and U4 have no visible edge: node and label fade
    assert "channel 12 of conv1" in svg
    v.selected = "L1.C7"
    assert [e.src for e in v.details()["in"]] == ["L0.C3", "L0.C12"]


def test_circuit_view_rejects_other_inputs():
    with pytest.raises(InputError, match=r"`circuit` must be a Circuit or a networkx\.DiGraph"):
        CircuitView({"L0.H0": 1.0})


def test_circuit_view_rejects_unknown_selection():
    with pytest.raises(InputError, match=r"no node 'L5\.H5'"):
        CircuitView(_circuit()).selected = "L5.H5"


def test_circuit_view_rejects_negative_threshold():
    with pytest.raises(InputError, match="`threshold`"):
        CircuitView(_circuit(), threshold=-0.1)


def test_circuit_view_details_need_a_selection():
    with pytest.raises(InputError, match="no node is selected"):
        CircuitView(_circuit()).details()


def test_graph_from_networkx_is_a_digraph():
    assert isinstance(_circuit().to_networkx(), nx.DiGraph)
