from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from xattr_nb.checks import InputError
from xattr_nb.models import zoo
from xattr_nb.models.text import tiny_gpt2
from xattr_nb.models.vision import TinyCNN, TinyViT


@pytest.fixture(autouse=True)
def empty_registry(monkeypatch):
    monkeypatch.setattr(zoo, "_RECIPES", {})
    # the project's recipe modules must not register into the empty stand-in: once imported they
    # would never register into the real registry again (test_cli after this file saw no recipe)
    monkeypatch.setattr(zoo, "_builtin_recipes", lambda: None)


def small_cnn(seed=0):
    torch.manual_seed(seed)
    return TinyCNN(3, widths=(4, 8)).eval()


def flip_byte(path: Path, offset: int = -5) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_save_load_round_trip_identical_outputs(tmp_path):
    x = torch.rand(2, 3, 16, 16)
    for name, model, inputs in [
        ("cnn", small_cnn(), (x,)),
        ("vit", TinyViT(3, image_size=16, patch=4, dim=16, depth=1), (x,)),
        ("lm", tiny_gpt2(11, n_layer=1, d_model=16, seed=5), (torch.tensor([[1, 2, 3, 10]]),)),
    ]:
        model.eval()
        entry = zoo.save(name, model, metrics={"acc": 0.9}, root=tmp_path)
        back = zoo.load(name, root=tmp_path)
        assert type(back) is type(model) and not back.training
        out, ref = back(*inputs), model(*inputs)
        torch.testing.assert_close(getattr(out, "logits", out), getattr(ref, "logits", ref), rtol=0, atol=0)
        assert entry.file == f"checkpoints/{name}.safetensors"
        assert entry.sha256 == zoo._sha256(tmp_path / entry.file)


def test_manifest_entry_fields(tmp_path):
    model = small_cnn()
    zoo.save("cnn", model, metrics={"acc": 0.75}, root=tmp_path)
    raw = json.loads((tmp_path / "manifest.json").read_text())["checkpoints"]["cnn"]
    assert raw["config"] == {"arch": "TinyCNN", "kwargs": {"n_classes": 3, "in_ch": 3, "widths": [4, 8]}}
    assert raw["metrics"] == {"acc": 0.75}
    assert raw["command"] == "xattr-nb zoo train cnn"
    assert len(raw["created"]) == 10 and len(raw["sha256"]) == 64
    assert raw["n_params"] == sum(p.numel() for p in model.parameters())
    [entry] = zoo.entries(tmp_path)
    assert entry.name == "cnn" and entry.metrics == {"acc": 0.75}


def test_checkpoint_is_safetensors_not_pickle(tmp_path):
    zoo.save("cnn", small_cnn(), metrics={}, root=tmp_path)
    head = (tmp_path / "checkpoints" / "cnn.safetensors").read_bytes()
    n = int.from_bytes(head[:8], "little")  # safetensors: u64 header length, then a JSON header
    header = json.loads(head[8 : 8 + n])
    assert "blocks.0.conv.weight" in header
    assert json.loads(header["__metadata__"]["xattr_nb_config"])["arch"] == "TinyCNN"


def test_load_refuses_tampered_file(tmp_path):
    entry = zoo.save("cnn", small_cnn(), metrics={}, root=tmp_path)
    path = tmp_path / entry.file
    flip_byte(path)
    actual = zoo._sha256(path)
    with pytest.raises(InputError, match="checksum") as info:
        zoo.load("cnn", root=tmp_path)
    msg = str(info.value)
    assert str(path) in msg and entry.sha256 in msg and actual in msg


def test_verify_reports_the_tampered_one(tmp_path):
    zoo.save("good", small_cnn(0), metrics={}, root=tmp_path)
    bad = zoo.save("bad", small_cnn(1), metrics={}, root=tmp_path)
    flip_byte(tmp_path / bad.file)
    report = {name: (ok, msg) for name, ok, msg in zoo.verify(tmp_path)}
    assert report["good"][0] is True
    assert report["bad"][0] is False and "checksum" in report["bad"][1]


def test_verify_reports_missing_file(tmp_path):
    entry = zoo.save("cnn", small_cnn(), metrics={}, root=tmp_path)
    (tmp_path / entry.file).unlink()
    [(_, ok, msg)] = zoo.verify(tmp_path)
    assert not ok and "missing" in msg and "xattr-nb zoo train cnn" in msg


def test_load_unknown_name_lists_known(tmp_path):
    zoo.save("alpha", small_cnn(), metrics={}, root=tmp_path)
    zoo.save("beta", small_cnn(), metrics={}, root=tmp_path)
    with pytest.raises(InputError, match=r"no checkpoint named 'gamma'.*\['alpha', 'beta'\]"):
        zoo.load("gamma", root=tmp_path)


def test_load_refuses_weights_that_do_not_fit_config(tmp_path):
    entry = zoo.save("cnn", small_cnn(), metrics={}, root=tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["checkpoints"]["cnn"]["config"]["kwargs"]["widths"] = [4, 9]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="does not fit"):
        zoo.load(entry.name, root=tmp_path)


def test_register_train_and_load(tmp_path):
    config = {"arch": "TinyCNN", "kwargs": {"n_classes": 3, "in_ch": 3, "widths": [4, 8]}}

    def recipe(seed):
        return small_cnn(seed), {"acc": 1.0}

    zoo.register("toy", config=config, train=recipe, description="a toy")
    assert set(zoo.recipes()) == {"toy"}
    entry = zoo.train("toy", seed=2, root=tmp_path)
    assert entry.metrics == {"acc": 1.0, "seed": 2} and entry.description == "a toy"
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(zoo.load("toy", root=tmp_path)(x), small_cnn(2)(x))
    # same seed, same file
    assert zoo.train("toy", seed=2, root=tmp_path).sha256 == entry.sha256


def test_register_rejects_taken_name():
    cfg = {"arch": "TinyCNN", "kwargs": {"n_classes": 3}}
    zoo.register("toy", config=cfg, train=lambda s: (TinyCNN(3), {}), description="")
    with pytest.raises(InputError, match="replace=True"):
        zoo.register("toy", config=cfg, train=lambda s: (TinyCNN(3), {}), description="")
    zoo.register("toy", config=cfg, train=lambda s: (TinyCNN(3), {}), description="v2", replace=True)
    assert zoo.recipes()["toy"].description == "v2"


def test_register_rejects_non_json_config():
    with pytest.raises(InputError, match="JSON"):
        zoo.register(
            "toy", config={"arch": "TinyCNN", "kwargs": {"widths": (4,), "x": object()}}, train=print, description=""
        )


def test_train_unknown_recipe(tmp_path):
    with pytest.raises(InputError, match="no recipe named 'nope'"):
        zoo.train("nope", root=tmp_path)


def test_train_rejects_bad_recipe_output(tmp_path):
    zoo.register(
        "toy", config={"arch": "TinyCNN", "kwargs": {"n_classes": 3}}, train=lambda s: TinyCNN(3), description=""
    )
    with pytest.raises(InputError, match=r"\(model, metrics dict\)"):
        zoo.train("toy", root=tmp_path)


def test_save_rejects_config_that_does_not_describe_model(tmp_path):
    with pytest.raises(InputError, match="does not describe"):
        zoo.save("cnn", small_cnn(), config={"arch": "TinyCNN", "kwargs": {"n_classes": 4}}, metrics={}, root=tmp_path)


def test_save_rejects_non_json_metrics(tmp_path):
    with pytest.raises(InputError, match="metrics"):
        zoo.save("cnn", small_cnn(), metrics={"acc": torch.tensor(1.0)}, root=tmp_path)


def test_save_rejects_bad_name(tmp_path):
    with pytest.raises(InputError, match="name"):
        zoo.save("../evil", small_cnn(), metrics={}, root=tmp_path)


def test_save_rejects_model_without_config(tmp_path):
    with pytest.raises(InputError, match="pass `config`"):
        zoo.save("lin", torch.nn.Linear(2, 2), metrics={}, root=tmp_path)


def test_entries_rejects_broken_manifest(tmp_path):
    (tmp_path / "manifest.json").write_text('{"checkpoints": {"x": {"file": "a"}}}')
    with pytest.raises(InputError, match="'file', 'sha256' and 'config'"):
        zoo.entries(tmp_path)


def test_default_root_env_and_repo(monkeypatch, tmp_path):
    monkeypatch.setenv("XATTR_NB_DATA", str(tmp_path))
    assert zoo.default_root() == tmp_path
    monkeypatch.delenv("XATTR_NB_DATA")
    assert zoo.default_root() == Path(zoo.__file__).resolve().parents[2] / "data"


def test_shipped_manifest_verifies():
    root = Path(zoo.__file__).resolve().parents[2] / "data"
    assert (root / "manifest.json").exists()
    bad = [(name, msg) for name, ok, msg in zoo.verify(root) if not ok]
    assert bad == []


# --- issue 10 item 4: a broken file that the manifest records, a missing root, malformed entries -------------


def record_file_in_manifest(root: Path, name: str) -> None:
    """Rewrite ``name``'s manifest sha256 to its file's current hash (as if the manifest were updated)."""
    manifest = json.loads((root / "manifest.json").read_text())
    entry = manifest["checkpoints"][name]
    entry["sha256"] = zoo._sha256(root / entry["file"])
    (root / "manifest.json").write_text(json.dumps(manifest))


def set_entry_field(root: Path, name: str, key: str, value) -> None:
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["checkpoints"][name][key] = value
    (root / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda b: b[: len(b) // 2], id="truncated-half"),
        pytest.param(lambda b: b[:-1], id="truncated-one-byte"),
        pytest.param(lambda b: b[:8], id="header-length-only"),
        pytest.param(lambda b: b[:4], id="shorter-than-header-length"),
        pytest.param(lambda b: b"", id="empty"),
        pytest.param(lambda b: b + b"\0" * 16, id="trailing-bytes"),
        pytest.param(lambda b: (1 << 40).to_bytes(8, "little") + b[8:], id="huge-header-length"),
        pytest.param(lambda b: b[:8] + b"{not json" + b[17:], id="header-not-json"),
    ],
)
def test_load_refuses_broken_file_whose_checksum_matches(tmp_path, corrupt):
    entry = zoo.save("cnn", small_cnn(), metrics={}, root=tmp_path)
    path = tmp_path / entry.file
    path.write_bytes(corrupt(path.read_bytes()))
    record_file_in_manifest(tmp_path, "cnn")  # the checksum passes: only the format check can catch it
    with pytest.raises(InputError) as info:
        zoo.load("cnn", root=tmp_path)
    msg = str(info.value)
    assert str(path) in msg and ("truncated or corrupt" in msg or "does not fit" in msg)
    assert "xattr-nb zoo train cnn" in msg


def test_verify_reports_truncated_file_and_checks_the_others(tmp_path):
    zoo.save("a_good", small_cnn(0), metrics={}, root=tmp_path)
    bad = zoo.save("b_truncated", small_cnn(1), metrics={}, root=tmp_path)
    zoo.save("c_good", small_cnn(2), metrics={}, root=tmp_path)
    path = tmp_path / bad.file
    path.write_bytes(path.read_bytes()[:-100])
    record_file_in_manifest(tmp_path, "b_truncated")
    report = zoo.verify(tmp_path)  # must not raise
    assert [(n, ok) for n, ok, _ in report] == [("a_good", True), ("b_truncated", False), ("c_good", True)]
    assert str(path) in report[1][2] and "truncated or corrupt" in report[1][2]


def test_verify_reports_malformed_entry_and_checks_the_others(tmp_path):
    zoo.save("good", small_cnn(), metrics={}, root=tmp_path)
    zoo.save("nofile", small_cnn(), metrics={}, root=tmp_path)
    zoo.save("badcfg", small_cnn(), metrics={}, root=tmp_path)
    set_entry_field(tmp_path, "nofile", "file", "../../elsewhere.safetensors")
    set_entry_field(tmp_path, "badcfg", "config", {"arch": "NoSuchArch", "kwargs": {}})
    report = {n: (ok, msg) for n, ok, msg in zoo.verify(tmp_path)}
    assert report["good"][0] is True
    assert report["nofile"][0] is False and "'file' must be a path inside the zoo folder" in report["nofile"][1]
    assert report["badcfg"][0] is False and "NoSuchArch" in report["badcfg"][1]


def test_load_missing_root_says_there_is_no_manifest(tmp_path):
    # a registered recipe of the same name used to make this read "recipes not yet trained: ['cnn']"
    zoo.register("cnn", config=small_cnn().arch_config, train=lambda s: (small_cnn(s), {}), description="")
    missing = tmp_path / "no_such_folder"
    with pytest.raises(InputError, match="no zoo manifest") as info:
        zoo.load("cnn", root=missing)
    msg = str(info.value)
    assert str(missing / "manifest.json") in msg and "does not exist" in msg and "not yet trained" not in msg
    with pytest.raises(InputError, match="no zoo manifest"):
        zoo.load("cnn", root=tmp_path)  # the folder exists but holds no manifest
    with pytest.raises(InputError, match="no zoo manifest") as info:
        zoo.verify(missing)  # verify has nothing to check: an empty list would read as "all fine"
    assert str(missing) in str(info.value)


def test_load_refuses_file_saved_for_another_config(tmp_path):
    zoo.save("cnn", small_cnn(), metrics={}, root=tmp_path)
    other = zoo.save("other", TinyCNN(3, widths=(4, 9)), metrics={}, root=tmp_path)
    set_entry_field(tmp_path, "cnn", "file", other.file)
    record_file_in_manifest(tmp_path, "cnn")
    with pytest.raises(InputError, match="does not fit its manifest config") as info:
        zoo.load("cnn", root=tmp_path)
    assert str(tmp_path / other.file) in str(info.value) and "[4, 9]" in str(info.value)


def test_load_refuses_foreign_file_without_saved_config(tmp_path):
    from safetensors.torch import save_model

    entry = zoo.save("cnn", small_cnn(), metrics={}, root=tmp_path)
    save_model(TinyCNN(3, widths=(4, 9)), str(tmp_path / entry.file))  # no xattr_nb_config metadata
    record_file_in_manifest(tmp_path, "cnn")
    with pytest.raises(InputError, match="does not fit its config 'TinyCNN'"):
        zoo.load("cnn", root=tmp_path)


def test_load_refuses_checkpoint_path_that_is_a_folder(tmp_path):
    entry = zoo.save("cnn", small_cnn(), metrics={}, root=tmp_path)
    (tmp_path / entry.file).unlink()
    (tmp_path / entry.file).mkdir()
    with pytest.raises(InputError, match="is not a file"):
        zoo.load("cnn", root=tmp_path)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("file", "/abs/x.safetensors", "'file' must be a path inside"),
        ("file", 3, "'file' must be a path inside"),
        ("sha256", "abc", "'sha256' must be 64"),
        ("config", "TinyCNN", "'config' must be a dict"),
    ],
)
def test_entries_rejects_malformed_fields(tmp_path, key, value, match):
    zoo.save("cnn", small_cnn(), metrics={}, root=tmp_path)
    set_entry_field(tmp_path, "cnn", key, value)
    with pytest.raises(InputError, match=match):
        zoo.entries(tmp_path)


def test_manifest_not_utf8_is_input_error(tmp_path):
    (tmp_path / "manifest.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(InputError, match="not valid JSON"):
        zoo.entries(tmp_path)


def test_load_unknown_name_suggests_close_one(tmp_path):
    zoo.save("alpha", small_cnn(), metrics={}, root=tmp_path)
    with pytest.raises(InputError, match=r"did you mean \['alpha'\]"):
        zoo.load("alpah", root=tmp_path)


def test_train_unknown_recipe_lists_known_and_suggests(tmp_path):
    zoo.register("shapes_cnn", config=small_cnn().arch_config, train=lambda s: (small_cnn(s), {}), description="")
    with pytest.raises(InputError, match=r"no recipe named 'shape_cnn'; known: \['shapes_cnn'\]; did you mean"):
        zoo.train("shape_cnn", root=tmp_path)


def test_checkpoint_trained_for_another_config_than_the_code_is_refused_naming_the_field(tmp_path):
    zoo.save("cnn", small_cnn(), metrics={}, root=tmp_path)
    saved = zoo.entries(tmp_path)[0].config
    zoo.register("cnn", config=saved, train=lambda seed: (small_cnn(seed), {}), description="probe")
    zoo.load("cnn", root=tmp_path)  # the code's recipe agrees: loads
    changed = {"arch": "TinyCNN", "kwargs": {**saved["kwargs"], "widths": [4, 16]}}
    zoo.register("cnn", config=changed, train=lambda seed: (small_cnn(seed), {}), description="probe", replace=True)
    with pytest.raises(
        InputError, match=r"another config than the code's recipe: kwargs\.widths\[1\]: the manifest has 8, the code 16"
    ):
        zoo.load("cnn", root=tmp_path)


@pytest.mark.parametrize(
    ("saved", "code", "found"),
    [({"a": 1}, {"a": 1}, None), ({"a": {"b": [1, 2]}}, {"a": {"b": [1, 3]}}, "a.b[1]"), ({"a": 1}, {}, "a: only the manifest"),
     # inside a Hugging Face config only the structural keys count (versions and new defaults may differ)
     ({"model_type": "gpt2", "transformers_version": "4.0", "use_cache": True}, {"model_type": "gpt2", "transformers_version": "5.0"}, None),
     ({"model_type": "gpt2", "n_layer": 2}, {"model_type": "gpt2", "n_layer": 4}, "n_layer")],
)  # fmt: skip
def test_config_mismatch(saved, code, found):
    got = zoo.config_mismatch(saved, code)
    assert (got is None) if found is None else got.startswith(found)
