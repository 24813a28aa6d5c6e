"""The model zoo: small trained checkpoints shipped in ``data/``, checksummed, reproducible.

Layout under a root folder (by default the repository's ``data/``, or ``$XATTR_NB_DATA``)::

    manifest.json                 {"checkpoints": {name: entry, ...}}
    checkpoints/<name>.safetensors

Each manifest entry holds the file, its sha256, the config that rebuilds the architecture
(``{"arch": ..., "kwargs": ...}``, see :func:`xattr_nb.models.vision.build`), the metrics the
training reached, the command that retrains it (``xattr-nb zoo train <name>``) and the date.
Weights are stored with safetensors only (no pickle: loading a checkpoint cannot run code), and
:func:`load` refuses a file whose checksum differs from the manifest, a file that is not a whole
safetensors file, and one whose saved config or parameters do not match its manifest entry, each
with an :class:`~xattr_nb.checks.InputError` that names the file and what is wrong.

Recipes (:func:`register`) say how to retrain a checkpoint: a config and a function
``train(seed) -> (model, metrics)``. :func:`train` runs one and saves the result.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import fcntl
import hashlib
import importlib
import json
import os
import pkgutil
import re
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model
from torch import nn

from xattr_nb.checks import InputError, check_int
from xattr_nb.models.architectures import build
from xattr_nb.models.io import check_model
from xattr_nb.models.text import hf_arch_config
from xattr_nb.runtime import pick_device

MANIFEST = "manifest.json"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


@dataclass(frozen=True)
class Recipe:
    """How to (re)train a zoo checkpoint: ``train(seed) -> (model, metrics)`` builds a model of ``config``."""

    name: str
    config: dict[str, Any]
    train: Callable[[int], tuple[nn.Module, dict[str, Any]]]
    description: str = ""
    tokenizer: Callable[[], Any] | None = None  # a language model's tokenizer (built, never downloaded)


@dataclass(frozen=True)
class ZooEntry:
    """One manifest entry. ``file`` is relative to the zoo root."""

    name: str
    file: str
    sha256: str
    config: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    command: str = ""
    created: str = ""
    description: str = ""
    n_params: int = 0

    def path(self, root: str | os.PathLike | None = None) -> Path:
        return _root(root) / self.file


_RECIPES: dict[str, Recipe] = {}


def default_root() -> Path:
    """``$XATTR_NB_DATA`` if set, else the ``data/`` folder of the repository (next to the package)."""
    env = os.environ.get("XATTR_NB_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "data"


def _root(root: str | os.PathLike | None) -> Path:
    if root is None:
        return default_root()
    if not isinstance(root, (str, os.PathLike)):
        raise InputError(f"`root` must be a folder path or None; got {type(root).__name__}")
    return Path(root)


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(f"`name` must be lowercase letters, digits, '_', '-' or '.' (a file name); got {name!r}")
    return name


def _check_config(config: Any) -> dict[str, Any]:
    if not isinstance(config, dict) or "arch" not in config:
        raise InputError(f"`config` must be a dict {{'arch': ..., 'kwargs': {{...}}}}; got {config!r}")
    try:
        json.dumps(config)
    except (TypeError, ValueError) as exc:
        raise InputError(f"`config` must be JSON-serialisable (it goes into manifest.json): {exc}") from exc
    return config


def _did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=3)
    return f"; did you mean {close}?" if close else ""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not path.exists():
        return {"checkpoints": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from exc
    except OSError as exc:  # a folder named manifest.json, no permission to read it
        raise InputError(f"{path} cannot be read: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("checkpoints"), dict):
        raise InputError(f"{path} must hold {{'checkpoints': {{name: entry}}}}")
    return data


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def register(
    name: str,
    *,
    config: dict[str, Any],
    train: Callable[[int], tuple[nn.Module, dict[str, Any]]],
    description: str,
    tokenizer: Callable[[], Any] | None = None,
    replace: bool = False,
) -> Recipe:
    """Register the recipe that trains checkpoint ``name``: ``train(seed)`` returns ``(model, metrics)``
    with ``model`` an instance of ``config``; ``tokenizer()`` builds a language model's tokenizer
    (:func:`tokenizer`). Registering a taken name needs ``replace=True``."""
    name = _check_name(name)
    config = _check_config(config)
    if not callable(train):
        raise InputError(f"`train` must be a function seed -> (model, metrics); got {type(train).__name__}")
    if not isinstance(description, str):
        raise InputError(f"`description` must be a str; got {type(description).__name__}")
    if name in _RECIPES and not replace:
        raise InputError(f"a recipe named {name!r} is already registered; pass replace=True to overwrite it")
    if tokenizer is not None and not callable(tokenizer):
        raise InputError(f"`tokenizer` must be a function () -> tokenizer; got {type(tokenizer).__name__}")
    _RECIPES[name] = Recipe(name, config, train, description, tokenizer)
    return _RECIPES[name]


def tokenizer(name: str) -> Any:
    """The tokenizer of the zoo language model ``name`` (built by its recipe; nothing is downloaded)."""
    name = _check_name(name)
    known = recipes()
    if name not in known:
        raise InputError(f"no recipe named {name!r}; known: {sorted(known)}{_did_you_mean(name, known)}")
    if known[name].tokenizer is None:
        raise InputError(f"zoo checkpoint {name!r} has no tokenizer (it is not a language model)")
    return known[name].tokenizer()


def _builtin_recipes() -> None:
    # Imported on first use: the recipes need the worlds and the trainer, which import this module.
    # Every module of xattr_nb.models named `recipes` or `*_recipes` registers its checkpoints.
    import xattr_nb.models as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name == "recipes" or info.name.endswith("_recipes"):
            importlib.import_module(f"xattr_nb.models.{info.name}")


def recipes() -> dict[str, Recipe]:
    """The registered recipes by name (a copy), the project's own included."""
    _builtin_recipes()
    return dict(_RECIPES)


def _parse_entry(root: Path, name: str, e: Any) -> ZooEntry:
    """One raw manifest entry as a :class:`ZooEntry`, its fields checked; InputError naming it otherwise."""
    where = f"{root / MANIFEST}: entry {name!r}"
    if not isinstance(e, dict) or not {"file", "sha256", "config"} <= set(e):
        raise InputError(f"{where} must hold at least 'file', 'sha256' and 'config'")
    file, sha, config = e["file"], e["sha256"], e["config"]
    if not isinstance(file, str) or not file or Path(file).is_absolute() or ".." in Path(file).parts:
        raise InputError(
            f"{where}: 'file' must be a path inside the zoo folder, e.g. 'checkpoints/x.safetensors'; got {file!r}"
        )
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise InputError(f"{where}: 'sha256' must be 64 lowercase hex digits; got {sha!r}")
    if not isinstance(config, dict) or "arch" not in config:
        raise InputError(f"{where}: 'config' must be a dict {{'arch': ..., 'kwargs': {{...}}}}; got {config!r}")
    known = set(ZooEntry.__dataclass_fields__) - {"name"}
    return ZooEntry(name=name, **{k: v for k, v in e.items() if k in known})


def entries(root: str | os.PathLike | None = None) -> list[ZooEntry]:
    """The checkpoints listed in ``root``'s manifest, sorted by name (none if ``root`` has no manifest)."""
    root = _root(root)
    data = _read_manifest(root)["checkpoints"]
    return [_parse_entry(root, n, e) for n, e in sorted(data.items())]


def _require_manifest(root: Path) -> None:
    path = root / MANIFEST
    if not path.is_file():
        what = "does not exist" if not root.exists() else ("is a file" if not root.is_dir() else "has none")
        env = os.environ.get("XATTR_NB_DATA")
        note = f" ($XATTR_NB_DATA is {env!r})" if env else ""
        raise InputError(
            f"no zoo manifest at {path} (the folder {root} {what}){note}; pass the folder that holds "
            "manifest.json as `root` or set $XATTR_NB_DATA to it"
        )


def _entry(name: str, root: Path) -> ZooEntry:
    _require_manifest(root)
    known = {e.name: e for e in entries(root)}
    if name not in known:
        _builtin_recipes()
        trainable = sorted(set(_RECIPES) - set(known))
        hint = f"; recipes not yet trained: {trainable} (run `xattr-nb zoo train <name>`)" if trainable else ""
        raise InputError(
            f"no checkpoint named {name!r} in {root / MANIFEST}; known: {sorted(known)}"
            f"{_did_you_mean(name, set(known) | set(_RECIPES))}{hint}"
        )
    return known[name]


def _config_of(model: nn.Module) -> dict[str, Any]:
    cfg = getattr(model, "arch_config", None)
    if cfg is None:
        from transformers import PreTrainedModel

        if isinstance(model, PreTrainedModel):
            return hf_arch_config(model)
        raise InputError(f"pass `config` for a {type(model).__name__}: it has no `arch_config`")
    return cfg


def save(
    name: str,
    model: nn.Module,
    *,
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any],
    root: str | os.PathLike | None = None,
    description: str = "",
) -> ZooEntry:
    """Write ``model``'s weights to ``checkpoints/<name>.safetensors`` and its entry to the manifest.

    ``config`` defaults to the model's ``arch_config`` (our models) or :func:`~xattr_nb.models.text.hf_arch_config`
    (transformers models). Before writing, the config is built and its parameter names and shapes
    compared with ``model``'s, so what is saved is guaranteed to load.
    """
    name = _check_name(name)
    check_model(model)
    config = _check_config(_config_of(model) if config is None else config)
    if not isinstance(metrics, dict):
        raise InputError(f"`metrics` must be a dict of JSON values; got {type(metrics).__name__}")
    try:
        json.dumps(metrics)
    except (TypeError, ValueError) as exc:
        raise InputError(f"`metrics` must be JSON-serialisable (plain numbers and strings): {exc}") from exc
    want = {k: tuple(v.shape) for k, v in build(config).state_dict().items()}
    have = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if want != have:
        diff = sorted(set(want.items()) ^ set(have.items()))[:6]
        raise InputError(f"`config` does not describe `model`: parameters differ, e.g. {diff}")

    root = _root(root)
    rel = f"checkpoints/{name}.safetensors"
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        save_model(model, tmp, metadata={"xattr_nb_config": json.dumps(config, sort_keys=True)})
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a shipped checkpoint is readable by everyone
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    entry = ZooEntry(
        name=name,
        file=rel,
        sha256=_sha256(path),
        config=config,
        metrics=metrics,
        command=f"xattr-nb zoo train {name}",
        created=_dt.date.today().isoformat(),
        description=description or (_RECIPES[name].description if name in _RECIPES else ""),
        n_params=sum(p.numel() for p in model.parameters()),
    )
    # Two trainings finishing at once must not drop each other's entry: read-modify-write under a lock.
    with open(root / f".{MANIFEST}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest = _read_manifest(root)
        manifest["checkpoints"][name] = {k: v for k, v in asdict(entry).items() if k != "name"}
        manifest["checkpoints"] = dict(sorted(manifest["checkpoints"].items()))
        _write_atomic(root / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    return entry


def load(name: str, *, root: str | os.PathLike | None = None, device: str = "cpu") -> nn.Module:
    """Rebuild checkpoint ``name`` from its config and load its weights (strictly), in eval mode.

    Raises :class:`~xattr_nb.checks.InputError`, naming the path and what is wrong, when ``root`` has
    no manifest, ``name`` is not in it, or the file is missing, differs from the manifest's sha256
    (a corrupted or replaced file), is not a whole safetensors file (truncated: its checksum can match
    a manifest that recorded it broken), was saved for another config, or does not fit the config.
    """
    name = _check_name(name)
    root = _root(root)
    dev = pick_device(device)
    return _load_entry(_entry(name, root), root).to(dev).eval()


#: Keys of a Hugging Face config that fix the architecture (the rest, e.g. ``transformers_version`` or
#: defaults a newer transformers adds, may differ between installs without changing the weights' shapes).
_HF_STRUCTURAL = frozenset({
    "model_type", "model_class", "vocab_size", "hidden_size", "n_embd", "d_model", "num_hidden_layers", "n_layer",
    "num_attention_heads", "n_head", "intermediate_size", "n_inner", "max_position_embeddings", "n_positions",
    "image_size", "patch_size", "num_channels", "projection_dim", "num_labels", "type_vocab_size",
})  # fmt: skip


def config_mismatch(saved: Any, code: Any, path: str = "") -> str | None:
    """The first field where a checkpoint's recorded config and the code's recipe config differ, as
    ``"a.b.c: ... "``, or ``None``. Inside Hugging Face configs only :data:`_HF_STRUCTURAL` keys count."""
    if isinstance(saved, dict) and isinstance(code, dict):
        hf = "transformers_version" in saved or "model_type" in saved
        for key in sorted(saved.keys() & code.keys(), key=str):
            if hf and key not in _HF_STRUCTURAL and not isinstance(saved[key], dict):
                continue
            found = config_mismatch(saved[key], code[key], f"{path}.{key}" if path else str(key))
            if found:
                return found
        extra = sorted(saved.keys() ^ code.keys(), key=str)
        if extra and not hf:
            side = "the manifest" if extra[0] in saved else "the code"
            return f"{path + '.' if path else ''}{extra[0]}: only {side} has it"
        return None
    if isinstance(saved, (list, tuple)) and isinstance(code, (list, tuple)) and len(saved) == len(code):
        for i, (a, b) in enumerate(zip(saved, code, strict=True)):
            found = config_mismatch(a, b, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if saved == code else f"{path}: the manifest has {saved!r}, the code {code!r}"


def _check_recipe_config(entry: ZooEntry, root: Path, fix: str) -> None:
    try:
        _builtin_recipes()
    except Exception as exc:  # a broken recipe module must not stop every other checkpoint from loading
        warnings.warn(f"zoo: the recipe modules could not be imported ({exc!r}); configs not checked", stacklevel=3)
    recipe = _RECIPES.get(entry.name)
    if recipe is None:
        return
    found = config_mismatch(entry.config, json.loads(json.dumps(recipe.config)))
    if found:
        raise InputError(
            f"checkpoint {entry.name!r} ({root / MANIFEST}) was trained for another config than the code's "
            f"recipe: {found}; {fix}"
        )


def _load_entry(entry: ZooEntry, root: Path) -> nn.Module:
    """Check ``entry``'s file (present, checksum, a whole safetensors file, saved config) and load it on CPU."""
    path = entry.path(root)
    fix = f"retrain it with `{entry.command or f'xattr-nb zoo train {entry.name}'}` or restore the file"
    _check_recipe_config(entry, root, fix)
    if not path.exists():
        raise InputError(f"checkpoint file {path} is missing; {fix}")
    if not path.is_file():
        raise InputError(f"checkpoint file {path} is not a file; {fix}")
    try:
        actual = _sha256(path)
    except OSError as exc:
        raise InputError(f"checkpoint file {path} cannot be read: {exc}") from exc
    if actual != entry.sha256:
        raise InputError(
            f"checkpoint file {path} fails its checksum: the manifest expects sha256 {entry.sha256} "
            f"but the file has {actual}; {fix}"
        )
    # The checksum only says the file is the one the manifest recorded; a truncated or otherwise broken
    # file can be recorded too. Everything safetensors can say about the file becomes an InputError.
    try:
        with safe_open(path, framework="pt") as f:
            saved = (f.metadata() or {}).get("xattr_nb_config")
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(
            f"checkpoint file {path} is not a readable safetensors file (truncated or corrupt: {exc}); {fix}"
        ) from exc
    if saved is not None:
        try:
            saved_config = json.loads(saved)
        except json.JSONDecodeError as exc:
            raise InputError(f"checkpoint file {path}: its saved config is not valid JSON ({exc}); {fix}") from exc
        if saved_config != entry.config:
            raise InputError(
                f"checkpoint file {path} does not fit its manifest config: the file was saved for {saved_config} "
                f"but {root / MANIFEST} entry {entry.name!r} says {entry.config}"
            )
    try:
        model = build(entry.config)
    except InputError as exc:
        raise InputError(f"{root / MANIFEST}: entry {entry.name!r} has a config that cannot be built: {exc}") from exc
    try:
        load_model(model, path, strict=True)
    except (SafetensorError, RuntimeError, ValueError, OSError) as exc:  # keys, shapes, bad header or data
        raise InputError(f"checkpoint file {path} does not fit its config {entry.config['arch']!r}: {exc}") from exc
    return model


def train(name: str, *, seed: int = 0, root: str | os.PathLike | None = None) -> ZooEntry:
    """Run the registered recipe ``name`` with ``seed`` and save the result (what ``xattr-nb zoo train`` does)."""
    name = _check_name(name)
    seed = check_int(seed, "seed", low=0, high=2**32 - 1)
    _builtin_recipes()
    if name not in _RECIPES:
        raise InputError(f"no recipe named {name!r}; known: {sorted(_RECIPES)}{_did_you_mean(name, _RECIPES)}")
    recipe = _RECIPES[name]
    out = recipe.train(seed)
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], nn.Module) and isinstance(out[1], dict)):
        raise InputError(f"recipe {name!r}: `train(seed)` must return (model, metrics dict)")
    model, metrics = out
    return save(
        name, model, config=recipe.config, metrics={**metrics, "seed": seed}, root=root, description=recipe.description
    )


def verify(root: str | os.PathLike | None = None) -> list[tuple[str, bool, str]]:
    """Check every manifest entry: well-formed, file present, checksum equal, a whole safetensors
    file saved for the entry's config, weights loadable into that config.

    Returns ``(name, ok, message)`` per checkpoint; never raises for a bad checkpoint or a malformed
    entry (that entry is reported not ok and the others are still checked). Raises
    :class:`~xattr_nb.checks.InputError` only when there is no list to check: ``root`` has no
    manifest, or the manifest is not a JSON ``{"checkpoints": {...}}``.
    """
    root = _root(root)
    _require_manifest(root)
    out = []
    for name, raw in sorted(_read_manifest(root)["checkpoints"].items()):
        try:
            entry = _parse_entry(root, name, raw)
            _load_entry(entry, root)
            out.append((name, True, f"ok ({entry.sha256[:12]})"))
        except InputError as exc:
            out.append((name, False, str(exc)))
        except Exception as exc:  # documented never to raise for a bad checkpoint: report it
            out.append((name, False, f"{type(exc).__name__}: {exc}"))
    return out
