"""Run configuration as plain dataclasses: build one in a notebook, or from the CLI's flags.

A `RunConfig` fully determines a training run: its `key()` names the run in the results cache, so a
re-run with an identical config reuses the stored result and any change retrains.
"""
from __future__ import annotations

import functools
import hashlib
import json
import types
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar


# -- checking values against the fields' annotations ------------------------------------------------
#
# Every config dataclass checks its values when it is built (__post_init__), whichever way it is built:
# directly, through RunConfig.override (dataclasses.replace) or RunConfig.from_dict. The rules follow the
# annotations, with no coercion of Python values: a str is never a bool or a number, a bool is not an
# int (True == 1 would silently pass), an int is a float (as in typing), and a list for a tuple field is
# stored as a tuple (json serialises both as a list, so run keys do not change). Only command-line text
# is parsed (parse_setting), and only where it is unambiguous.

def _matches(value: Any, tp: Any) -> tuple[bool, Any]:
    """(does value fit the annotation tp, the value to store)."""
    if tp is Any:
        return True, value
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool), value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            ok, stored = _matches(value, arg)
            if ok:
                return True, stored
        return False, value
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False, value
        items = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(items) != len(value):
            return False, value
        checked = [_matches(v, t) for v, t in zip(value, items)]
        stored = tuple(v for _, v in checked)
        same = isinstance(value, tuple) and all(a is b for a, b in zip(value, stored))
        return all(ok for ok, _ in checked), value if same else stored
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args), value
    if origin is not None:                       # dict[str, Any], list[...]: the container type only
        return isinstance(value, origin), value
    return isinstance(value, tp), value


_NAMES = {bool: ("bool", " (true or false)"), int: ("int", ""), float: ("float", " (an int will do)"),
          str: ("string", ""), type(None): ("None", " (null on the command line)"),
          dict: ("dict", ' (a JSON object on the command line, e.g. {"key": 1})'), list: ("list", "")}


def _describe(tp: Any) -> str:
    """The annotation in words, for error messages: "a bool (true or false)", "a tuple of ints, e.g. ..."."""
    if tp is Any:
        return "any value"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        item = _NAMES.get(args[0], (_describe(args[0]),))[0]
        return f"a tuple of {item}s, e.g. (16, 32) ([16, 32] on the command line)"
    if origin is tuple:
        return f"a tuple of {len(args)} ({', '.join(_describe(a) for a in args)})"
    noun, note = _NAMES.get(origin or tp, (getattr(origin or tp, "__name__", str(tp)), ""))
    return noun + note if noun == "None" else f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}{note}"


def _got(value: Any) -> str:
    text = repr(value)
    return f"{text[:80] + '...' if len(text) > 80 else text} ({type(value).__name__})"


class _Checked:
    """Checks every field against its annotation after __init__ (see _matches)."""
    _section: ClassVar[str] = ""                 # the field names' prefix in messages: "model.pretrained"

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in fields(self):
            value = getattr(self, f.name)
            ok, stored = _matches(value, hints[f.name])
            if not ok:
                name = f"{self._section}.{f.name}" if self._section else f.name
                raise ValueError(f"invalid {name}: got {_got(value)}, expected {_describe(hints[f.name])}")
            if stored is not value:
                object.__setattr__(self, f.name, stored)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """The evaluated annotations (strings in this module, which imports annotations from __future__)."""
    return typing.get_type_hints(cls)


@dataclass
class DataConfig(_Checked):
    _section: ClassVar[str] = "data"

    name: str = "synth"                # "synth" (the book's benchmark) or a real dataset (see fglib.data)
    root: str | None = None            # folder of a real dataset; the benchmark is generated into the cache
    image_size: int = 40               # side of the square image the model sees (book scale: 40)
    synth: dict[str, Any] = field(default_factory=dict)   # SynthConfig overrides for the benchmark
    in_memory: bool = True             # the fast path: uint8 tensors + batched augmentation; False: files
                                       # through torchvision transforms and a DataLoader (real datasets)
    workers: int = 4                   # DataLoader worker processes when in_memory is False
    crop_padding: int = 4              # random-crop augmentation: pad then crop back (in pixels)
    flip: bool = True                  # random horizontal flips while training


@dataclass
class ModelConfig(_Checked):
    _section: ClassVar[str] = "model"

    method: str = "baseline"           # a key of fglib.models.MODELS
    backbone: str = "small_resnet"     # "small_resnet" or a torchvision resnet name
    widths: tuple[int, ...] = (16, 32, 64, 128)
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    pretrained: bool = False
    weights_path: str | None = None
    dropout: float = 0.0
    bilinear_dim: int = 32
    output_stride: int | None = None   # small_resnet: dilate past this stride (None: 8 with 4 stages)
    options: dict[str, Any] = field(default_factory=dict)   # method-specific settings (mu, lambda, xi, ...)


@dataclass
class TrainConfig(_Checked):
    _section: ClassVar[str] = "train"

    epochs: int = 25
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.5         # linear warm-up, then cosine decay, stepped per iteration
    label_smoothing: float = 0.0       # epsilon of every classification cross-entropy term (0: none)
    head_lr_scale: float = 1.0         # lr of the parameters outside the backbone, as a multiple of lr
    seed: int = 0
    sampler: str = "random"            # "random" or "balanced" (classes_per_batch x images_per_class)
    classes_per_batch: int = 8
    images_per_class: int = 4
    freeze_backbone_epochs: int = 0    # fine-tuning: the backbone's lr is 0 for these first epochs (its
                                       # gradients, momentum and batch-norm statistics still update)
    eval_every: int = 0                # evaluate on the test split every n epochs (0: only at the end)
    device: str = "auto"               # "auto", "cpu" or "cuda"
    amp: bool | str = "auto"           # mixed precision. "auto": float16 on CUDA, bfloat16 on a CPU with native
                                       # BF16 instructions, float32 on other CPUs (where emulated bfloat16 is
                                       # 10x slower); True forces bf16/fp16, False float32. The precision a
                                       # run used is recorded with it (RunResult.precision).


# Fields added after the results store began, with their defaults: left out of a config's key while
# at the default, so that adding a setting does not rename every stored run.
ADDED_FIELDS: dict[str, Any] = {"model.output_stride": None, "train.freeze_backbone_epochs": 0,
                                 "train.head_lr_scale": 1.0}


@dataclass
class RunConfig(_Checked):
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def portable_dict(self) -> dict[str, Any]:
        """to_dict without the fields added after the store began (ADDED_FIELDS) while they are at
        their defaults: what older code reads as the same config (store migrate hands it over)."""
        d = self.to_dict()
        for name, default in ADDED_FIELDS.items():
            section, _, attr = name.partition(".")
            if d[section][attr] == default:
                del d[section][attr]
        return d

    def key(self) -> str:
        """A short hash of the whole config but the device: the run's name in the results store.

        The code that trains it is covered by a separate fingerprint (fglib.experiments.provenance), so that a run
        recorded with older code is reported as stale rather than silently reused.
        """
        d = self.portable_dict()
        d["train"].pop("device")
        blob = json.dumps({"cfg": d}, sort_keys=True, default=list)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        """The inverse of to_dict (a stored record's config); values are checked like any other config."""
        sections = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
        if not isinstance(d, dict) or set(d) - set(sections):
            raise ValueError(f"a run config is a dict with the sections {sorted(sections)}, got {_got(d)}")

        def build(kind, values):
            if not isinstance(values, dict):
                raise ValueError(f"invalid {kind._section}: got {_got(values)}, expected a dict of its fields")
            names = {f.name for f in fields(kind)}
            unknown = set(values) - names
            if unknown:
                raise ValueError(f"unknown {kind.__name__} field(s) {sorted(unknown)}; known: {sorted(names)}")
            return kind(**values)                # lists for tuple fields become tuples in __post_init__
        return cls(*(build(kind, d.get(name, {})) for name, kind in sections.items()))

    def override(self, **dotted: Any) -> "RunConfig":
        """cfg.override(**{"train.seed": 1, "model.method": "bilinear"}) -> a new config."""
        parts = {"data": self.data, "model": self.model, "train": self.train}
        for name, value in dotted.items():
            setting_type(name)                   # an unknown setting is an error
            section, _, attr = name.partition(".")
            parts[section] = replace(parts[section], **{attr: value})
        return RunConfig(**parts)


def setting_type(name: str) -> Any:
    """The annotation of a dotted setting ("train.lr" -> float); ValueError for an unknown one."""
    kinds = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
    section, _, attr = name.partition(".")
    kind = kinds.get(section)
    if kind is None or attr not in {f.name for f in fields(kind)}:
        known = f"; {section} has {', '.join(f.name for f in fields(kind))}" if kind else ""
        raise ValueError(f"unknown setting {name!r}: use section.field, e.g. train.lr or model.method{known}")
    return _hints(kind)[attr]


def parse_setting(item: str) -> tuple[str, Any]:
    """Command-line text "section.field=value" -> (name, value), parsed for the field's type.

    true/false (or True/False) are booleans, anything else is read as JSON (3, 0.1, null, [16, 32],
    {"xi": 4}); text that is not JSON, or JSON that does not fit a field that takes a string (a folder
    named 2024), stays the text itself. A JSON list for a tuple field becomes a tuple. The value is not
    otherwise converted: one that does not fit is reported when the config is built.
    """
    name, sep, text = item.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ValueError(f"--set expects section.field=value, e.g. train.lr=0.05; got {item!r}")
    tp = setting_type(name)
    if text in ("true", "True", "false", "False"):
        value: Any = text.lower() == "true"
    else:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
    ok, stored = _matches(value, tp)
    if ok:
        return name, stored
    if _matches(text, tp)[0]:                    # the field takes a string: keep the text as typed
        return name, text
    return name, value


def book_profile(**dotted: Any) -> RunConfig:
    """The book's scale: CPU, the generated benchmark, the small ResNet trained from scratch."""
    return RunConfig().override(**dotted)


def paper_profile(dataset: str = "cub", root: str | None = None, **dotted: Any) -> RunConfig:
    """The papers' scale: a real dataset, ResNet-50 from ImageNet weights, 448-pixel crops."""
    cfg = RunConfig(
        data=DataConfig(name=dataset, root=root, image_size=448, in_memory=False, crop_padding=0),
        model=ModelConfig(backbone="resnet50", pretrained=True, dropout=0.0),
        train=TrainConfig(epochs=100, batch_size=16, lr=0.01, weight_decay=5e-4, warmup_epochs=0.0),
    )
    return cfg.override(**dotted)


PROFILES = {"book": book_profile, "paper": paper_profile}
