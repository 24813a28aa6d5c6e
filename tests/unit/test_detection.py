"""The tiny grid detector: box IoU, NMS, decoding, AP, the VPS object score, and a short training run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xattr_nb.checks import InputError
from xattr_nb.models import ARCHITECTURES, build
from xattr_nb.models.detection import (
    Detections,
    TinyGridDetector,
    average_precision,
    batched_nms,
    box_iou,
    decode,
    detection_score,
    encode_targets,
    evaluate_detector,
    nms,
    pairwise_box_iou,
    train_detector,
)
from xattr_nb.worlds.shapes import make_scenes


class FixedDetector(nn.Module):
    """Returns the same proposals for every image: boxes [P, 4] and class probabilities [P, K + 1]."""

    def __init__(self, boxes: torch.Tensor, probs: torch.Tensor) -> None:
        super().__init__()
        self.boxes, self.logp = boxes, probs.clamp_min(1e-12).log()
        self.n_classes = probs.shape[1] - 1

    def forward(self, x: torch.Tensor) -> Detections:
        b = x.shape[0]
        return Detections(self.boxes.expand(b, -1, -1), self.logp.expand(b, -1, -1))


# ----------------------------------------------------------------------------- boxes


def test_box_iou_analytic_values():
    a = torch.tensor([0.0, 0.0, 2.0, 2.0])
    assert float(box_iou(a, a)) == 1.0
    assert float(box_iou(a, torch.tensor([2.0, 2.0, 4.0, 4.0]))) == 0.0  # touching corners
    assert float(box_iou(a, torch.tensor([1.0, 1.0, 3.0, 3.0]))) == pytest.approx(1 / 7)
    assert float(box_iou(a, torch.tensor([1.0, 0.0, 3.0, 2.0]))) == pytest.approx(1 / 3)
    assert float(box_iou(a, torch.tensor([0.5, 0.5, 1.5, 1.5]))) == pytest.approx(1 / 4)  # contained
    assert float(box_iou(a, torch.tensor([1.0, 1.0, 1.0, 3.0]))) == 0.0  # degenerate
    assert box_iou(torch.zeros(2, 5, 4), a).shape == (2, 5)
    m = pairwise_box_iou(torch.stack([a, a + 1]), torch.stack([a, a + 1, a + 10]))
    assert m.shape == (2, 3) and m[1, 1] == 1.0 and m[0, 1] == pytest.approx(1 / 7) and m[0, 2] == 0.0


def test_nms_suppresses_overlaps_above_the_threshold():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    # IoU(A, B) = 81 / 119 = 0.68; D duplicates A.
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]
    assert nms(boxes, scores, 0.7).tolist() == [0, 1, 2]
    assert nms(boxes[:0], scores[:0], 0.5).tolist() == []


def test_batched_nms_keeps_overlapping_boxes_of_different_labels():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    keep = batched_nms(boxes, torch.tensor([0.5, 0.9, 0.7]), torch.tensor([0, 1, 0]), 0.5)
    assert keep.tolist() == [1, 2]


def test_decode_thresholds_then_suppresses():
    boxes = torch.tensor([[[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [40, 40, 44, 44]]])
    probs = torch.tensor([[[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]]])
    res = decode(Detections(boxes, probs.log()), score_threshold=0.5, iou_threshold=0.5)
    assert len(res) == 1
    # Cell 1 overlaps cell 0 but has another class, so it survives; cell 3 is background.
    assert res[0].labels.tolist() == [0, 1, 1]
    assert res[0].scores.tolist() == pytest.approx([0.9, 0.8, 0.7])


def test_encode_targets_puts_each_object_in_its_centre_cell():
    cls, box = encode_targets(
        [torch.tensor([[0.0, 0, 10, 10], [30, 14, 40, 20]])], [torch.tensor([2, 0])], n_classes=3, image_size=48, grid=6
    )
    # centres (5, 5) -> cell 0; (35, 17) -> row 2, col 4 -> cell 16
    assert cls.shape == (1, 36) and cls[0, 0] == 2 and cls[0, 16] == 0
    assert int((cls[0] == 3).sum()) == 34 and box[0, 16].tolist() == [30, 14, 40, 20]


def test_average_precision_analytic():
    assert average_precision(torch.tensor([0.9, 0.8]), torch.tensor([True, True]), 2) == pytest.approx(1.0)
    # TP, FP, TP over 2 objects: recall 0.5 at precision 1, recall 1 at precision 2/3.
    ap = average_precision(torch.tensor([0.9, 0.8, 0.7]), torch.tensor([True, False, True]), 2)
    assert ap == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert average_precision(torch.tensor([0.9]), torch.tensor([True]), 2) == pytest.approx(0.5)  # one missed


def test_detection_score_is_best_iou_times_class_probability():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 20], [30, 30, 40, 40]])
    probs = torch.tensor([[0.3, 0.6, 0.1], [0.9, 0.05, 0.05], [0.95, 0.0, 0.05]])
    det = FixedDetector(boxes, probs)
    target = torch.tensor([0.0, 0, 10, 10])
    x = torch.zeros(2, 3, 8, 8)
    # class 0: max(1.0 * 0.3, 0.5 * 0.9, 0 * 0.95) = 0.45
    assert detection_score(det, target, 0)(x).tolist() == pytest.approx([0.45, 0.45])
    assert detection_score(det, target, 1)(x).tolist() == pytest.approx([0.6, 0.6])
    # cls mode: IoU > 0.5 only counts proposal 0 (IoU of proposal 1 is exactly 0.5)
    assert detection_score(det, target, 0, mode="cls")(x).tolist() == pytest.approx([0.3, 0.3])
    assert detection_score(det, target, 0, proposal=1)(x).tolist() == pytest.approx([0.45, 0.45])


# ----------------------------------------------------------------------------- the model


def test_detector_outputs_boxes_inside_their_cells_and_rebuilds_from_config():
    torch.manual_seed(0)
    det = TinyGridDetector(3).eval()
    out = det(torch.rand(2, 3, 48, 48))
    assert out.boxes.shape == (2, 36, 4) and out.logits.shape == (2, 36, 4)
    centres = (out.boxes[..., :2] + out.boxes[..., 2:]) / 2
    cell = torch.div(centres, 8, rounding_mode="floor")
    assert torch.equal(cell[0, :, 1] * 6 + cell[0, :, 0], torch.arange(36.0))  # proposal i sits in cell i
    assert torch.allclose(out.probs.sum(-1), torch.ones(2, 36))
    assert "TinyGridDetector" in ARCHITECTURES
    clone = build(det.arch_config)
    clone.load_state_dict(det.state_dict())
    assert torch.equal(clone.eval()(torch.ones(1, 3, 48, 48)).boxes, det(torch.ones(1, 3, 48, 48)).boxes)


def test_training_reaches_a_stated_recall_on_a_tiny_problem():
    train = make_scenes(300, classes=("square",), max_objects=2, seed=1)
    test = make_scenes(100, classes=("square",), max_objects=2, seed=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convs: one thread avoids OpenMP contention on a shared CPU
    try:
        det, hist = train_detector(train.images, train.boxes, train.labels, n_classes=1, epochs=10, seed=0)
    finally:
        torch.set_num_threads(threads)
    assert hist.loss[-1] < hist.loss[0] / 3
    r = evaluate_detector(det, test.images, test.boxes, test.labels)
    assert r["recall"] >= 0.8 and r["map"] >= 0.8  # 0.93 and 0.95 at seed 0
    assert len(r["matched"]) == 100 and r["n_objects"] == sum(len(lab) for lab in test.labels)


def test_training_is_seeded():
    s = make_scenes(32, seed=5)
    a, _ = train_detector(s.images, s.boxes, s.labels, n_classes=3, epochs=1, batch_size=16, seed=7)
    b, _ = train_detector(s.images, s.boxes, s.labels, n_classes=3, epochs=1, batch_size=16, seed=7)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


# ----------------------------------------------------------------------------- bad inputs


def test_bad_image_size():
    with pytest.raises(InputError, match="48x48"):
        TinyGridDetector(3)(torch.zeros(1, 3, 32, 32))


def test_bad_grid_ratio():
    with pytest.raises(InputError, match="power of two"):
        TinyGridDetector(3, image_size=48, grid=5)


def test_bad_box_shape():
    with pytest.raises(InputError, match=r"\[\.\.\., 4\]"):
        box_iou(torch.zeros(3), torch.zeros(4))


def test_bad_nms_scores_length():
    with pytest.raises(InputError, match="scores"):
        nms(torch.zeros(2, 4), torch.zeros(3))


def test_bad_encode_labels_out_of_range():
    with pytest.raises(InputError, match="labels"):
        encode_targets([torch.tensor([[0.0, 0, 4, 4]])], [torch.tensor([3])], n_classes=3, image_size=48, grid=6)


def test_bad_annotation_lengths():
    with pytest.raises(InputError, match="one entry per image"):
        train_detector(torch.zeros(2, 3, 48, 48), [torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)], n_classes=1)


def test_bad_target_box_degenerate():
    with pytest.raises(InputError, match="x1 > x0"):
        detection_score(TinyGridDetector(3), [5.0, 5.0, 5.0, 9.0], 0)


def test_bad_target_class():
    with pytest.raises(InputError, match="target_class"):
        detection_score(TinyGridDetector(3), [0.0, 0.0, 5.0, 5.0], 3)


def test_bad_score_mode():
    with pytest.raises(InputError, match="mode"):
        detection_score(TinyGridDetector(3), [0.0, 0.0, 5.0, 5.0], 0, mode="box")


def test_bad_decode_input():
    with pytest.raises(InputError, match="Detections"):
        decode(torch.zeros(1, 36, 8))  # type: ignore[arg-type]


def test_bad_average_precision_more_tp_than_objects():
    with pytest.raises(InputError, match="true positives"):
        average_precision(torch.tensor([0.9, 0.8]), torch.tensor([True, True]), 1)
