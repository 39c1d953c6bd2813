"""`scratchgpt pretrain`: pretrain a GPT from a preset, a config file and flags (one per field)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from scratchgpt.training.config import SECTIONS, coerce_value, field_types

# Flags whose plain field name would be unclear on the command line.
_FLAG_NAMES = {("data", "source"): "data", ("model", "preset"): "model"}
DEFAULT_PRESET = "book-ch5"


def flag_name(section: str, name: str) -> str:
    return "--" + _FLAG_NAMES.get((section, name), name).replace("_", "-")


def add_config_flags(
    parser: argparse.ArgumentParser,
    sections: tuple[str, ...] = ("model", "data", "train"),
    *,
    defaults: dict[str, Any] | None = None,
    title: str | None = None,
) -> None:
    """One flag per field of the given RunConfig sections, defaulting to 'not given' so presets
    and files stay in force. The fine-tuning commands reuse it for the training section, so every
    training command spells its loop flags the same way; ``defaults`` only changes the help text."""
    titles = {"model": "model (GPT preset and overrides)", "data": "data", "train": "training"}
    for section in sections:
        klass = SECTIONS[section]
        group = parser.add_argument_group(title or titles[section])
        types = field_types(klass)
        for f in dataclasses.fields(klass):
            base, optional = types[f.name]
            dest = f"cfg__{section}__{f.name}"
            help_text = f.metadata["help"]
            if defaults is not None:
                help_text += f" (default: {defaults.get(f.name, f.default)})"
            kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS, "help": help_text}
            if base is bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            else:
                kwargs["metavar"] = {int: "N", float: "X"}.get(base, "VALUE")
                if "choices" in f.metadata:
                    kwargs["choices"] = list(f.metadata["choices"])
                    kwargs.pop("metavar")
                if optional:
                    kwargs["help"] += " ('none' to unset)"
            # Each field also answers to its dotted config path (--model.n_layers), the spelling
            # of the YAML file, so a config key and its flag are the same words.
            group.add_argument(flag_name(section, f.name), f"--{section}.{f.name}", **kwargs)


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
        or "continue the run in --out (its saved settings apply unless flags change them)",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """{"section.field": value} for the config flags given on the command line."""
    out = {}
    for key, value in vars(args).items():
        if key.startswith("cfg__"):
            _, section, name = key.split("__", 2)
            base, optional = field_types(SECTIONS[section])[name]
            out[f"{section}.{name}"] = coerce_value(value, base, optional, flag_name(section, name))
    return out


def register(subparsers: Any) -> None:
    from scratchgpt.training.config import list_presets

    presets = list_presets()
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
    p.add_argument("--preset", choices=presets, help=f"run preset (default: {DEFAULT_PRESET})")
    p.add_argument(
        "--config", metavar="FILE", help="YAML or JSON run config (applied over the preset)"
    )
    add_run_flags(
        p,
        resume_help="continue the run in --out from its newest complete checkpoint (its "
        "config.yaml is the base config unless --preset/--config is given)",
    )
    add_config_flags(p)
    p.set_defaults(func=run)


def resolve_run_config(args: argparse.Namespace) -> Any:
    from scratchgpt.tasks.pretrain import RUN_CONFIG_FILE
    from scratchgpt.training.config import RunConfig, file_overrides

    saved = Path(args.out) / RUN_CONFIG_FILE
    if args.resume and not args.preset and not args.config and saved.is_file():
        cfg = RunConfig.load(saved)
    else:
        cfg = RunConfig.preset(args.preset or DEFAULT_PRESET)
    if args.config:
        # The file's fields replace the preset's only where the file sets them.
        cfg = cfg.with_overrides(file_overrides(args.config), source=str(args.config))
    return cfg.with_overrides(config_overrides(args), source="command line")


def run(args: argparse.Namespace) -> int:
    from scratchgpt.tasks.pretrain import pretrain

    cfg = resolve_run_config(args)
    if args.print_config:
        sys.stdout.write(cfg.to_yaml())
        return 0
    result = pretrain(cfg, args.out, overwrite=args.overwrite, resume=args.resume, argv=sys.argv)
    if result.status == "interrupted":
        print(
            f"interrupted at step {result.steps}; checkpoint saved in {result.last_checkpoint}. "
            f"Continue with: scratchgpt pretrain --out {args.out} --resume",
            file=sys.stderr,
        )
        return 130
    return 0
