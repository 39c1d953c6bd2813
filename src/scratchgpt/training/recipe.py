"""What every recipe config shares: sections, dict/YAML round trips, presets, the run file.

Every recipe (pretraining, classification fine-tuning, instruction tuning) has a config of the
same shape: ``model`` / ``data`` / ``train`` plus, for the fine-tuning recipes, one section of
their own (``classify:``, ``instruct:``). :class:`RecipeConfig` gives them the same dotted
overrides (``"train.lr"``), the same bundled presets (``training/presets/*.yaml``: the recipe of a
preset is the task section it has) and the same ``config.yaml`` in every run folder. No torch.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from scratchgpt.errors import ConfigError
from scratchgpt.fileio import PathLike, atomic_write_text
from scratchgpt.training.fields import config_from_dict, load_mapping, parse_yaml

# The one config file of every run folder (all three recipes write it the same way).
RUN_CONFIG_FILE = "config.yaml"


# ---------------------------------------------------------------------------------------------
# Recipe configs: the same shape and the same file handling for every recipe


class RecipeConfig:
    """Base of every recipe's config: ``model`` / ``data`` / ``train`` plus the task's section.

    A subclass is a ``@dataclass(init=False)`` declaring its sections and sets ``SECTIONS``,
    ``RECIPE`` and (optionally) ``DEFAULT_PRESET``: a section left out of the constructor comes
    from that preset, or from its dataclass defaults without one. ``LEGACY_FIELDS`` maps the
    flat keywords of older releases to their ``section.field``; they still work, with a
    DeprecationWarning.
    """

    SECTIONS: ClassVar[dict[str, type]] = {}
    RECIPE: ClassVar[str] = ""
    DEFAULT_PRESET: ClassVar[str | None] = None
    LEGACY_FIELDS: ClassVar[dict[str, str]] = {}
    LEGACY_FILE: ClassVar[str | None] = None
    # Fields of which at most one may be set: giving one over a saved config drops the others.
    EXCLUSIVE: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *args: Any, **given: Any) -> None:
        names = list(self.SECTIONS)
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} sections")
        given.update(zip(names, args, strict=False))
        flat = {k: given.pop(k) for k in list(given) if self._is_flat(k, given[k])}
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown section(s) {unknown}")
        defaults = self.default_dict()
        for name, klass in self.SECTIONS.items():
            value = given.get(name)
            if value is None:
                value = defaults.get(name) or {}
            if isinstance(value, dict):
                value = config_from_dict(klass, value, f"{type(self).__name__}: {name}")
            elif not isinstance(value, klass):
                raise ConfigError(f"{name}: expected a {klass.__name__}, got {value!r}")
            setattr(self, name, value)
        if flat:
            warnings.warn(
                f"{type(self).__name__}({', '.join(f'{k}=' for k in flat)}...): flat fields are "
                f"deprecated; pass the sections {names} (e.g. model=dict(checkpoint=...))",
                DeprecationWarning,
                stacklevel=2,
            )
            for key, value in self.legacy_overrides(flat).items():
                section, _, name = key.partition(".")
                setattr(self, section, dataclasses.replace(getattr(self, section), **{name: value}))
        self.check()

    def _is_flat(self, key: str, value: Any) -> bool:
        if key not in self.SECTIONS:
            return key in self.LEGACY_FIELDS
        # "data" was a flat field before it was a section: a string is the old spelling.
        return key in self.LEGACY_FIELDS and isinstance(value, str)

    def __getattr__(self, name: str) -> Any:
        target = type(self).LEGACY_FIELDS.get(name)
        if target is None or name in type(self).SECTIONS:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        warnings.warn(
            f"{type(self).__name__}.{name} is deprecated; use .{target}",
            DeprecationWarning,
            stacklevel=2,
        )
        section, _, field_name = target.partition(".")
        return getattr(getattr(self, section), field_name)

    def check(self) -> None:
        """Checks across sections (a subclass adds its own)."""

    @classmethod
    def legacy_overrides(cls, flat: dict[str, Any]) -> dict[str, Any]:
        """Dotted overrides from the flat fields of older releases."""
        return {cls.LEGACY_FIELDS[k]: v for k, v in flat.items()}

    @classmethod
    def default_dict(cls) -> dict[str, Any]:
        """The sections of the default preset (empty without one)."""
        return preset_mapping(cls.DEFAULT_PRESET) if cls.DEFAULT_PRESET else {}

    def to_dict(self) -> dict[str, Any]:
        return {name: dataclasses.asdict(getattr(self, name)) for name in self.SECTIONS}

    @classmethod
    def from_dict(cls, d: Any, source: str = "config") -> Any:
        """Build from nested dicts; unknown sections or fields are errors naming them."""
        return cls(**cls._sections_of(d, source))

    @classmethod
    def _sections_of(cls, d: Any, source: str) -> dict[str, Any]:
        """{section: section object} of a nested mapping, each section validated alone."""
        if d is None:
            d = {}
        known = sorted(cls.SECTIONS)
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a mapping with sections {known}")
        unknown = sorted(set(d) - set(cls.SECTIONS))
        if unknown:
            raise ConfigError(f"{source}: unknown section(s) {unknown}; known sections: {known}")
        return {
            name: config_from_dict(klass, d.get(name) or {}, f"{source}: {name}")
            for name, klass in cls.SECTIONS.items()
            if name in d or not cls.DEFAULT_PRESET
        }

    @classmethod
    def merge(cls, d: dict[str, Any], overrides: dict[str, Any], source: str) -> dict[str, Any]:
        """A copy of the nested dict ``d`` with dotted keys (``"train.lr"``) changed."""
        out = {name: dict(d.get(name) or {}) for name in cls.SECTIONS}
        if any(key in overrides for key in cls.EXCLUSIVE):
            for key in cls.EXCLUSIVE:
                section, _, name = key.partition(".")
                out[section].pop(name, None)
        for key, value in overrides.items():
            section, _, name = key.partition(".")
            if section not in cls.SECTIONS or not name:
                raise ConfigError(f"{source}: {key!r} is not a 'section.field' key")
            out[section][name] = value
        return out

    def with_overrides(self, overrides: dict[str, Any], source: str = "overrides") -> Any:
        """A copy with dotted keys (``"train.lr"``) changed, validated again."""
        return type(self).from_dict(type(self).merge(self.to_dict(), overrides, source), source)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def save(self, path: PathLike) -> Path:
        """Write as YAML (``.yaml``/``.yml``) or JSON (anything else), atomically."""
        p = Path(path)
        if p.suffix in (".yaml", ".yml"):
            return atomic_write_text(p, self.to_yaml())
        return atomic_write_text(p, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: PathLike) -> Any:
        """Read a YAML or JSON config file."""
        return cls.from_dict(load_mapping(path), source=str(path))

    @classmethod
    def coerce(cls, config: Any) -> Any:
        """A config of this recipe from what a recipe's ``run`` accepts: the config itself, a
        dict of sections, a YAML/JSON file or a preset name."""
        if isinstance(config, cls):
            return config
        if isinstance(config, dict):
            return cls.from_dict(config)
        if Path(config).is_file():
            return cls.load(config)
        return cls.preset(str(config))

    @classmethod
    def preset_dict(cls, name: str) -> dict[str, Any]:
        """A bundled preset of this recipe as nested dicts (before the cross-section checks)."""
        d = preset_mapping(name)
        recipe = _recipe_of(d)
        if recipe != cls.RECIPE:
            raise ConfigError(
                f"preset {name!r} is a {recipe} preset; {cls.RECIPE} presets: "
                f"{list_presets(cls.RECIPE)}"
            )
        cls._sections_of(d, f"preset {name!r}")  # field-level validation
        return d

    @classmethod
    def preset(cls, name: str) -> Any:
        """A bundled preset of this recipe (see ``list_presets()``)."""
        return cls.from_dict(cls.preset_dict(name), source=f"preset {name!r}")

    @classmethod
    def file_overrides(cls, path: PathLike) -> dict[str, Any]:
        """The fields a YAML/JSON config file sets, as dotted keys (each section validated)."""
        raw = load_mapping(path) or {}
        parts = cls._sections_of(raw, str(path))
        return {f"{s}.{k}": getattr(parts[s], k) for s, fields in raw.items() for k in fields or {}}

    @classmethod
    def saved_dict(cls, run_dir: PathLike) -> dict[str, Any] | None:
        """The config of a run folder as nested dicts: its ``config.yaml``, or the file an older
        release wrote (``LEGACY_FILE``); None when there is neither."""
        p = Path(run_dir) / RUN_CONFIG_FILE
        if p.is_file():
            d = load_mapping(p)
            cls._sections_of(d, str(p))
            return d
        if cls.LEGACY_FILE and (Path(run_dir) / cls.LEGACY_FILE).is_file():
            legacy = load_mapping(Path(run_dir) / cls.LEGACY_FILE)
            if not isinstance(legacy, dict):
                raise ConfigError(f"{Path(run_dir) / cls.LEGACY_FILE}: expected a JSON object")
            return cls.from_legacy_dict(legacy)
        return None

    @classmethod
    def from_legacy_dict(cls, d: dict[str, Any]) -> dict[str, Any]:
        """Nested sections from the file an older release wrote into the run folder. The base
        reads a file that already has this recipe's sections; recipes whose older file was flat
        (classify, instruct) convert it here."""
        cls._sections_of(d, str(cls.LEGACY_FILE))
        return d

    @classmethod
    def from_run_dir(cls, run_dir: PathLike) -> Any:
        """The config saved in a run folder (``config.yaml``, or an older release's file)."""
        d = cls.saved_dict(run_dir)
        if d is None:
            raise ConfigError(f"{run_dir}: no {RUN_CONFIG_FILE}; not a {cls.RECIPE} run folder")
        return cls.from_dict(d, source=str(Path(run_dir) / RUN_CONFIG_FILE))


# ---------------------------------------------------------------------------------------------
# Presets: training/presets/*.yaml, one file per recipe preset

_TASK_SECTIONS = ("classify", "instruct", "dpo")


def _recipe_of(d: Any) -> str:
    """A preset's recipe: the task section it has (classify, instruct), else pretrain."""
    return next((s for s in _TASK_SECTIONS if isinstance(d, dict) and s in d), "pretrain")


def preset_mapping(name: str) -> dict[str, Any]:
    """The sections of a bundled preset as nested dicts."""
    names = list_presets()
    if name not in names:
        raise ConfigError(f"unknown training preset {name!r}; choose one of {names}")
    text = (resources.files(__package__) / "presets" / f"{name}.yaml").read_text("utf-8")
    d = parse_yaml(text, f"preset {name!r}") or {}
    if not isinstance(d, dict):
        raise ConfigError(f"preset {name!r}: expected a mapping of sections")
    return d


def list_presets(recipe: str | None = None) -> list[str]:
    """Names of the bundled presets (``training/presets/*.yaml``), or of one recipe's
    (``pretrain``, ``classify``, ``instruct``)."""
    folder = resources.files(__package__) / "presets"
    names = sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))
    if recipe is None:
        return names
    return [n for n in names if _recipe_of(preset_mapping(n)) == recipe]
