import numpy as np
import pytest
import torch

from xattr_nb.checks import InputError, check_int, check_target, check_tensor, check_text, check_texts


def test_check_tensor_accepts_and_converts_numpy():
    out = check_tensor(np.zeros((2, 3), dtype=np.float32), "x", ndim=2, dtype="float")
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3)


@pytest.mark.parametrize(
    ("x", "kw", "match"),
    [
        ([1, 2], {}, "must be a torch.Tensor"),
        (torch.zeros(3), {"ndim": 4, "layout": "[B, C, H, W]"}, r"4-D tensor \[B, C, H, W\]; got shape \(3,\)"),
        (torch.zeros(2, 3), {"shape": (2, 4)}, r"shape \(2, 4\)"),
        (torch.zeros(2, dtype=torch.long), {"dtype": "float"}, "floating-point"),
        (torch.zeros(2), {"dtype": "int"}, "integer"),
        (torch.tensor([1.0, float("nan")]), {}, "NaN"),
        (torch.zeros(0, 3), {}, "empty"),
    ],
)
def test_check_tensor_errors_name_the_argument(x, kw, match):
    with pytest.raises(InputError, match=match) as info:
        check_tensor(x, "scores", **kw)
    assert "`scores`" in str(info.value)


def test_check_target_broadcasts_int_and_validates_range():
    assert check_target(2, 3, 4).tolist() == [2, 2, 2, 2]
    assert check_target([0, 1], 3, 2).tolist() == [0, 1]
    with pytest.raises(InputError, match=r"\[0, 3\)"):
        check_target(3, 3, 1)
    with pytest.raises(InputError, match="2 entries but the batch has 3"):
        check_target(torch.tensor([0, 1]), 3, 3)
    with pytest.raises(InputError, match="bool"):
        check_target(True, 3, 1)


def test_text_checks():
    assert check_text("a b") == "a b"
    with pytest.raises(InputError, match="`text` is empty"):
        check_text("   ")
    with pytest.raises(InputError, match=r"`texts\[1\]` is empty"):
        check_texts(["ok", ""])
    with pytest.raises(InputError, match="non-empty list"):
        check_texts([])


def test_check_int_range():
    assert check_int(3, "n", low=1) == 3
    with pytest.raises(InputError, match=r"`n` must lie in \[1, inf\]"):
        check_int(0, "n", low=1)


def test_check_target_says_what_target_may_be():
    with pytest.raises(InputError, match=r"an int class index, a list of ints or a 1-D integer tensor.*'circle'"):
        check_target("circle", 3, 1)
    with pytest.raises(InputError, match=r"an int class index.*got float"):
        check_target(1.0, 3, 1)


class _FakeParam:
    def __init__(self, device: str, dtype: torch.dtype) -> None:
        self.device, self.dtype = torch.device(device), dtype

    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point


class _FakeModel:
    """Reports a parameter on a device this machine need not have (no data is ever touched)."""

    def __init__(self, device: str, dtype: torch.dtype = torch.float32) -> None:
        self.p = _FakeParam(device, dtype)

    def parameters(self):
        return iter([self.p])

    def buffers(self):
        return iter([])


def test_check_placement_names_both_sides():
    from xattr_nb.checks import check_placement

    x = torch.zeros(2, 3)
    check_placement(x, torch.nn.Linear(3, 2))  # same device and dtype: fine
    check_placement(x, torch.nn.ReLU())  # nothing to compare with: fine
    with pytest.raises(InputError, match=r"`inputs` is on cpu but the model's parameters are on cuda:0"):
        check_placement(x, _FakeModel("cuda:0"))
    with pytest.raises(InputError, match=r"`inputs` is on the meta device"):
        check_placement(torch.empty(2, 3, device="meta"), torch.nn.Linear(3, 2))
    with pytest.raises(InputError, match=r"model's parameters are on the meta device"):
        check_placement(x, _FakeModel("meta"))
    with pytest.raises(InputError, match=r"`images` is float16 but the model's parameters are float32"):
        check_placement(x.half(), torch.nn.Linear(3, 2), "images")
    check_placement(torch.zeros(2, 3, dtype=torch.long), torch.nn.Linear(3, 2))  # ids: no dtype rule
