"""`scratchgpt pretrain`: pretrain a GPT from a preset, a config file and flags (one per field).

The flag builders here are shared by every training command (pretrain, finetune-classifier,
finetune-instruct): each recipe config section gets one flag per field, every command takes
--preset, --config, --out, --resume, and resolves preset -> saved run -> file -> flags the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Collection
from typing import Any

from scratchgpt.training.config import RecipeConfig, RunConfig, coerce_value, field_types
from scratchgpt.training.fields import is_list_type

# Flags whose plain field name would be unclear on the command line.
_FLAG_NAMES = {("data", "source"): "data", ("model", "preset"): "model"}
_TITLES = {"model": "model (GPT preset and overrides)", "data": "data", "train": "training"}
_SCALARS = (bool, int, float, str, dict)
DEFAULT_PRESET = "book-ch5"


def flag_name(section: str, name: str) -> str:
    return "--" + _FLAG_NAMES.get((section, name), name).replace("_", "-")


def add_config_flags(
    parser: argparse.ArgumentParser,
    sections: tuple[str, ...] | None = None,
    *,
    config: type[RecipeConfig] = RunConfig,
    defaults: dict[str, dict[str, Any]] | None = None,
    title: str | None = None,
    skip: Collection[str] = (),
) -> None:
    """One flag per field of the given sections of a recipe config, defaulting to 'not given'
    so presets and files stay in force; every training command spells its flags this way.
    ``defaults`` ({section: {field: value}}, e.g. a preset) only changes the help text;
    ``skip`` ("section.field") leaves out fields the command does not use."""
    for section in sections or tuple(config.SECTIONS):
        klass = config.SECTIONS[section]
        group = parser.add_argument_group(title or _TITLES.get(section, section))
        types = field_types(klass)
        for f in dataclasses.fields(klass):
            base, optional = types[f.name]
            if base not in _SCALARS and not is_list_type(base):
                continue  # set in a config file only
            if f"{section}.{f.name}" in skip:
                continue
            help_text = f.metadata.get("help", f.name)
            if defaults is not None:
                value = (defaults.get(section) or {}).get(f.name, f.default)
                if value is not None and value is not dataclasses.MISSING:
                    shown = ",".join(map(str, value)) if isinstance(value, list) else value
                    help_text += f" (default: {shown})"
            kwargs: dict[str, Any] = {
                "dest": f"cfg__{section}__{f.name}",
                "default": argparse.SUPPRESS,
                "help": help_text,
            }
            if base is bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            elif "choices" in f.metadata:
                kwargs["choices"] = list(f.metadata["choices"])
            else:
                kwargs["metavar"] = "A,B,..." if is_list_type(base) else _metavar(base)
            if optional and base is not bool and "choices" not in kwargs:
                kwargs["help"] += " ('none' to unset)"
            # Each field also answers to its dotted config path (--model.n_layers), the spelling
            # of the YAML file, so a config key and its flag are the same words.
            group.add_argument(flag_name(section, f.name), f"--{section}.{f.name}", **kwargs)


def _metavar(base: Any) -> str:
    return {int: "N", float: "X", dict: "JSON"}.get(base, "VALUE")


def add_preset_flags(parser: argparse.ArgumentParser, recipe: str, default: str) -> None:
    """--preset (this recipe's bundled presets) and --config FILE."""
    from scratchgpt.training.config import list_presets

    parser.add_argument(
        "--preset", choices=list_presets(recipe), help=f"settings preset (default: {default})"
    )
    parser.add_argument(
        "--config", metavar="FILE", help="YAML or JSON config (applied over the preset)"
    )


def add_run_flags(parser: argparse.ArgumentParser, resume_help: str | None = None) -> None:
    """--out, --overwrite, --resume and --print-config: the same on every training command."""
    parser.add_argument(
        "--out", metavar="DIR", required=True, help="run folder (logs, checkpoints, plots)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="delete an existing run in --out first"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help=resume_help
        or "continue the run in --out (its config.yaml applies unless --preset/--config is "
        "given; flags change it)",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )


def config_overrides(
    args: argparse.Namespace, config: type[RecipeConfig] = RunConfig
) -> dict[str, Any]:
    """{"section.field": value} for the config flags given on the command line."""
    out = {}
    for key, value in vars(args).items():
        if key.startswith("cfg__"):
            _, section, name = key.split("__", 2)
            base, optional = field_types(config.SECTIONS[section])[name]
            out[f"{section}.{name}"] = coerce_value(value, base, optional, flag_name(section, name))
    return out


def resolve_recipe_config(
    config: type[RecipeConfig], args: argparse.Namespace, default_preset: str
) -> Any:
    """The run's config: the preset (or, with --resume, the run's saved config.yaml), then
    --config FILE where it sets fields, then the flags."""
    saved = None
    if args.resume and not args.preset and not args.config:
        saved = config.saved_dict(args.out)
    base = saved if saved is not None else config.preset_dict(args.preset or default_preset)
    if args.config:
        # The file's fields replace the preset's only where the file sets them.
        base = config.merge(base, config.file_overrides(args.config), str(args.config))
    base = config.merge(base, config_overrides(args, config), "command line")
    return config.from_dict(base, source="command line")


def print_config(cfg: RecipeConfig) -> int:
    sys.stdout.write(cfg.to_yaml())
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "pretrain",
        help="pretrain a GPT on a text or token shards",
        description=(
            "Pretrain a GPT (the book's chapter 5 and appendix D) with checkpoints that resume "
            "exactly, metrics.jsonl, run.json and plots in --out. Settings come from a preset "
            f"(default {DEFAULT_PRESET}), then --config FILE, then flags."
        ),
        epilog=(
            "examples:\n"
            "  scratchgpt pretrain --preset book-ch5 --out runs/ch5\n"
            "  scratchgpt pretrain --preset char-small --out runs/char --max-steps 300\n"
            "  scratchgpt pretrain --out runs/ch5 --resume        # continue after a crash or Ctrl-C"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_preset_flags(p, "pretrain", DEFAULT_PRESET)
    add_run_flags(
        p,
        resume_help="continue the run in --out from its newest complete checkpoint (its "
        "config.yaml is the base config unless --preset/--config is given)",
    )
    add_config_flags(p)
    p.set_defaults(func=run)


def resolve_run_config(args: argparse.Namespace) -> RunConfig:
    """The pretraining config of the command line."""
    return resolve_recipe_config(RunConfig, args, DEFAULT_PRESET)


def run(args: argparse.Namespace) -> int:
    from scratchgpt.tasks.pretrain import pretrain

    cfg = resolve_run_config(args)
    if args.print_config:
        return print_config(cfg)
    result = pretrain(cfg, args.out, overwrite=args.overwrite, resume=args.resume, argv=sys.argv)
    if result.status == "interrupted":
        print(
            f"interrupted at step {result.steps}; checkpoint saved in {result.last_checkpoint}. "
            f"Continue with: scratchgpt pretrain --out {args.out} --resume",
            file=sys.stderr,
        )
        return 130
    return 0
