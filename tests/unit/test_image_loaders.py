"""Paper-scale image loaders, on local stand-ins: a folder of PNGs and a tiny ResNet saved locally."""

import pytest
import torch

from xattr_nb import InputError
from xattr_nb.models import ImageClassifier, load_image_classifier
from xattr_nb.worlds.folders import load_image_folder


@pytest.fixture
def folder(tmp_path):
    from PIL import Image

    for c, color in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.new("RGB", (40 + 10 * i, 30), color).save(tmp_path / c / f"{i}.png")
    return tmp_path


def test_image_folder_reads_resizes_and_labels(folder):
    x, y, classes = load_image_folder(folder, size=16)
    assert classes == ["cat", "dog"] and x.shape == (6, 3, 16, 16) and y.tolist() == [0, 0, 0, 1, 1, 1]
    torch.testing.assert_close(x[0, :, 5, 5], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(x[-1, :, 8, 8], torch.tensor([0.0, 0.0, 1.0]))


def test_image_folder_subsets_are_seeded_and_classes_pick_order(folder):
    a = load_image_folder(folder, size=16, per_class=2, seed=3)
    b = load_image_folder(folder, size=16, per_class=2, seed=3)
    assert torch.equal(a[0], b[0]) and a[1].tolist() == [0, 0, 1, 1]
    _, y, classes = load_image_folder(folder, size=8, classes=["dog"])
    assert classes == ["dog"] and y.tolist() == [0, 0, 0]


def test_image_folder_errors_name_the_argument(folder, tmp_path):
    with pytest.raises(InputError, match="`root`"):
        load_image_folder(tmp_path / "missing")
    with pytest.raises(InputError, match="`classes`"):
        load_image_folder(folder, classes=["bird"])
    with pytest.raises(InputError, match="`size`"):
        load_image_folder(folder, size=2)
    (folder / "empty").mkdir()
    with pytest.raises(InputError, match="holds no image"):
        load_image_folder(folder)


def test_image_classifier_normalises_and_matches_the_hf_model(tmp_path):
    from transformers import ResNetConfig, ResNetForImageClassification

    cfg = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=3)
    torch.manual_seed(0)
    ResNetForImageClassification(cfg).save_pretrained(tmp_path)
    m = load_image_classifier(tmp_path, local_files_only=True)
    assert isinstance(m, ImageClassifier) and not m.training
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(m(x), m.hf(pixel_values=(x - mean) / std).logits)
        assert m.features(x).shape == (2, 16)


def test_image_classifier_errors(tmp_path):
    with pytest.raises(InputError, match="not an existing folder"):
        load_image_classifier(tmp_path / "nothing", local_files_only=True)
    with pytest.raises(InputError, match="offline"):
        load_image_classifier("no-such-org/no-such-model", local_files_only=True)
    with pytest.raises(InputError, match="`hf_model`"):
        ImageClassifier("resnet")
