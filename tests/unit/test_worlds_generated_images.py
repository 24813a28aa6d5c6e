import pytest
import torch

from xattr_nb.checks import InputError
from xattr_nb.worlds.generated_images import make_aigi_pairs, patch_grid, strong_pattern, weak_pattern


def test_determinism_by_seed():
    a, b = make_aigi_pairs(6, seed=3), make_aigi_pairs(6, seed=3)
    c = make_aigi_pairs(6, seed=4)
    assert torch.equal(a.fake, b.fake) and torch.equal(a.strong_idx, b.strong_idx)
    assert not torch.equal(a.real, c.real)


def test_artifact_is_weak_everywhere_and_strong_in_one_patch():
    d = make_aigi_pairs(5, weak_amp=0.03, strong_amp=0.15, seed=0)
    grid = patch_grid(32, 8)
    diff = d.fake - d.real
    for b in range(5):
        s = int(d.strong_idx[b, 0])
        strong_pix = (grid == s)[None].expand(3, 32, 32)
        expect = 0.03 * weak_pattern(32) + 0.15 * strong_pattern(32) * (grid == s).float()
        torch.testing.assert_close(diff[b], expect.expand(3, 32, 32), atol=1e-6, rtol=0)
        # every other patch carries exactly the checkerboard at the weak amplitude
        assert torch.allclose(diff[b][~strong_pix].abs(), torch.tensor(0.03), atol=1e-6)
    assert d.n_patches == 16 and not d.replaced.any()


def test_real_is_smooth_plus_sensor_noise():
    d = make_aigi_pairs(50, sensor_noise=0.0, seed=1)
    # a smooth field has almost no energy at the checkerboard frequency
    assert float((d.real * weak_pattern(32)).mean(dim=(2, 3)).abs().max()) < 0.01
    assert float(d.real.min()) > 0.1 and float(d.real.max()) < 0.9
    noisy = make_aigi_pairs(50, sensor_noise=0.03, seed=1)
    assert abs(float((noisy.real - d.real).std()) - 0.03) < 0.003


def test_unseen_has_no_strong_patch_and_jittered_amplitude():
    d = make_aigi_pairs(200, variant="unseen", unseen_amp=(0.02, 0.04), seed=2)
    assert (d.strong_idx == -1).all()
    assert float(d.weak_amp.min()) >= 0.02 and float(d.weak_amp.max()) <= 0.04
    diff = d.fake - d.real
    expect = d.weak_amp[:, None, None, None] * weak_pattern(32)
    torch.testing.assert_close(diff, expect.expand_as(diff), atol=1e-6, rtol=0)  # same phase, never flipped


def test_masked_replaces_strong_and_a_quarter_of_the_rest():
    d = make_aigi_pairs(20, variant="masked", mask_frac=0.25, seed=5)
    grid = patch_grid(32, 8)
    for b in range(20):
        assert bool(d.replaced[b, d.strong_idx[b]].all())
        assert int(d.replaced[b].sum()) == 1 + round(0.25 * 15)
        pix = d.replaced[b][grid]
        assert torch.equal(d.fake[b][:, pix], d.real[b][:, pix])
        assert (d.fake[b][:, ~pix] != d.real[b][:, ~pix]).all()


def test_subset_and_split_keep_pairs():
    d = make_aigi_pairs(10, seed=0)
    a, b = d.split((0.5, 0.5), seed=0)
    assert len(a) + len(b) == 10 and a.patch == 8


@pytest.mark.parametrize(
    ("kw", "name"),
    [
        ({"n": 0}, "n"),
        ({"n": 2, "variant": "gan"}, "variant"),
        ({"n": 2, "patch": 5}, "patch"),
        ({"n": 2, "weak_amp": -1.0}, "weak_amp"),
        ({"n": 2, "n_strong": 17}, "n_strong"),
        ({"n": 2, "unseen_amp": (0.04, 0.02)}, "unseen_amp"),
        ({"n": 2, "mask_frac": 2.0}, "mask_frac"),
    ],
)
def test_bad_inputs_name_the_argument(kw, name):
    with pytest.raises(InputError, match=name):
        make_aigi_pairs(**kw)
