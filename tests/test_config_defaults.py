"""Configs hold only what differs from the class defaults: a value equal to its default is written twice.

Each YAML under configs/ is read as written (not merged with its base). Every ``init_args`` value of a class named
by ``class_path`` (in that file or up its ``base`` chain), and every ``trainer`` value, is compared with the
default of that argument in the class's ``__init__`` signature. Values pinned on purpose are listed in ``PINNED``
with the reason.
"""

import importlib
import inspect
from pathlib import Path

import lightning as L
import pytest
import yaml

ROOT = Path(__file__).parent.parent
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))

# (file relative to configs/, dotted key): why the default is written out
PINNED = {
    ("eval/base.yaml", "trainer.devices"): "evaluation is one CPU process unless a parallel fragment says otherwise",
    ("sandbox/base.yaml", "trainer.devices"): "the sandbox is one CPU process; Lightning's default is every device",
    ("eval/base.yaml", "trainer.precision"): "evaluation numbers are fp32 whatever a stage's base chose",
    ("sandbox/base.yaml", "trainer.precision"): "the sandbox stages are fp32 (pretrain_m/l override it)",
    ("llama/base.yaml", "trainer.num_nodes"): "the place to set the node count for a multi-node run",
    ("parallel/single.yaml", "trainer.devices"): "the fragment's whole point: one device",
    ("parallel/single.yaml", "trainer.strategy"): "undoes a base's strategy (llama/base.yaml sets FSDP2)",
}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def class_path_of(path: Path, section: str) -> str | None:
    """The class a section names, in the file or up its base chain."""
    while True:
        config = load(path)
        class_path = (config.get(section) or {}).get("class_path")
        if class_path or not config.get("base"):
            return class_path
        path = path.parent / config["base"]


def inherited(path: Path, section: str, key: str):
    """``(True, value)`` when a config up the base chain sets ``key``, else ``(False, None)``."""
    base = load(path).get("base")
    while base:
        path = path.parent / base
        config = load(path)
        values = config.get(section) or {}
        values = values if section == "trainer" else values.get("init_args") or {}
        if key in values:
            return True, values[key]
        base = config.get("base")
    return False, None


def class_defaults(class_path: str) -> dict:
    module, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def same(value, default) -> bool:
    if isinstance(default, (dict, list, tuple)) or not isinstance(value, (str, int, float, bool, type(None))):
        return False  # a structured default (a dataclass, a list) is compared by its own class's test
    return type(value) in (type(default), int, float) and value == default if default is not None else value is None


def repeated_defaults(path: Path) -> list[str]:
    config, found = load(path), []
    name = str(path.relative_to(ROOT / "configs"))
    sections = {"trainer": (config.get("trainer") or {}, "lightning.pytorch.Trainer")}
    for section in ("model", "data"):
        class_path = class_path_of(path, section)
        if class_path:
            sections[section] = ((config.get(section) or {}).get("init_args") or {}, class_path)
    for section, (values, class_path) in sections.items():
        defaults = class_defaults(class_path)
        for key, value in values.items():
            dotted = f"{section}.{key}" if section == "trainer" else f"{section}.init_args.{key}"
            if (name, f"{section}.{key}") in PINNED:
                continue
            overrides, base_value = inherited(path, section, key)
            if overrides and same(value, base_value):
                found.append(f"{name}: {dotted} = {value!r} is already set by its base")
            elif not overrides and key in defaults and same(value, defaults[key]):
                found.append(f"{name}: {dotted} = {value!r} is the default of {class_path}")
    return found


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_config_sets_only_what_differs(config):
    assert repeated_defaults(config) == []


def test_the_check_catches_a_repeated_default(tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    path = configs / "x.yaml"
    (configs / "base.yaml").write_text("trainer: {gradient_clip_val: 1.0, log_every_n_steps: 5}\n")
    path.write_text("base: base.yaml\ntrainer: {accelerator: auto, gradient_clip_val: null, log_every_n_steps: 5}\n"
                    "model: {class_path: lit_models.PPOModule, init_args: {clip: 0.2, kl_coef: 0.1}}\n")
    global ROOT
    root, ROOT = ROOT, tmp_path
    try:
        found = repeated_defaults(path)
    finally:
        ROOT = root
    assert found == ["x.yaml: trainer.accelerator = 'auto' is the default of lightning.pytorch.Trainer",
                     "x.yaml: trainer.log_every_n_steps = 5 is already set by its base",
                     "x.yaml: model.init_args.clip = 0.2 is the default of lit_models.PPOModule"]


def test_pinned_keys_are_still_in_their_files():
    for name, key in PINNED:
        section, _, field = key.partition(".")
        assert field in (load(ROOT / "configs" / name).get(section) or {}), f"{name}: {key} is no longer pinned there"
    assert L.Trainer  # the trainer defaults come from this Lightning
