"""The models ``scratchgpt download`` knows: our name -> Hugging Face repository and family.

Our names are the presets' names in :mod:`scratchgpt.config` where there is one
(``gpt2-small``, ``llama3.2-1b``, ``qwen3-0.6b`` ...), plus ``-instruct`` (Llama's chat-tuned
releases), ``-base`` (Qwen3's pretrained-only releases; Qwen's own unsuffixed repositories
are the post-trained ones) and ``-it`` (Gemma 3's instruction-tuned releases). The hub's
repository names work too, in any case.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from scratchgpt.errors import CheckpointError


@dataclass(frozen=True)
class HubModel:
    """One downloadable model: our name, its hub repository and its model family."""

    name: str
    repo: str
    family: str  # a GPTConfig family: "gpt2", "llama3", "qwen3" or "gemma3"

    @property
    def gated(self) -> bool:
        """Meta's and Google's repositories need an accepted license and a token before they
        serve files."""
        return self.repo.startswith(("meta-llama/", "google/"))


# Our name -> the hub repository holding the same weights as OpenAI's release.
GPT2_REPOS: dict[str, str] = {
    "gpt2-small": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
}
LLAMA3_REPOS: dict[str, str] = {
    f"llama{version}-{size}{suffix}": f"meta-llama/Llama-{version}-{size.upper()}{repo_suffix}"
    for version, size in (("3.2", "1b"), ("3.2", "3b"), ("3.1", "8b"))
    for suffix, repo_suffix in (("", ""), ("-instruct", "-Instruct"))
}
QWEN3_REPOS: dict[str, str] = {
    f"qwen3-{size}{suffix}": f"Qwen/Qwen3-{size.upper()}{repo_suffix}"
    for size in ("0.6b", "1.7b", "4b", "8b", "30b-a3b")  # 30b-a3b: the mixture of experts
    for suffix, repo_suffix in (("", ""), ("-base", "-Base"))
}
# Gemma 3's text-only sizes: the pretrained 1B's repository says "-pt", the 270M's nothing.
GEMMA3_REPOS: dict[str, str] = {
    "gemma3-270m": "google/gemma-3-270m",
    "gemma3-270m-it": "google/gemma-3-270m-it",
    "gemma3-1b": "google/gemma-3-1b-pt",
    "gemma3-1b-it": "google/gemma-3-1b-it",
}
HUB_MODELS: dict[str, HubModel] = {
    name: HubModel(name, repo, family)
    for family, repos in (
        ("gpt2", GPT2_REPOS),
        ("llama3", LLAMA3_REPOS),
        ("qwen3", QWEN3_REPOS),
        ("gemma3", GEMMA3_REPOS),
    )
    for name, repo in repos.items()
}
FAMILY_TITLES = {"gpt2": "GPT-2", "llama3": "Llama 3.x", "qwen3": "Qwen3", "gemma3": "Gemma 3"}

# Other spellings users meet: the hub's repository ids and bare repository names, and OpenAI's
# folder names for GPT-2 (the book's "124M").
_ALIASES: dict[str, str] = {
    "124m": "gpt2-small",
    "355m": "gpt2-medium",
    "774m": "gpt2-large",
    "1558m": "gpt2-xl",
    **{m.repo.split("/")[-1].lower(): name for name, m in HUB_MODELS.items()},
    **{m.repo.lower(): name for name, m in HUB_MODELS.items()},
}


def canonical_model_name(name: str) -> str | None:
    """``gpt2-small`` for ``gpt2``, ``openai-community/gpt2``, ``124M``; ``llama3.2-1b`` for
    ``meta-llama/Llama-3.2-1B``; ...; None if unknown."""
    key = name.strip().lower()
    if key in HUB_MODELS:
        return key
    return _ALIASES.get(key)


def names_by_family() -> dict[str, list[str]]:
    """Our names grouped by family title (``{"GPT-2": ["gpt2-small", ...], ...}``)."""
    groups: dict[str, list[str]] = {title: [] for title in FAMILY_TITLES.values()}
    for name, model in HUB_MODELS.items():
        groups[FAMILY_TITLES[model.family]].append(name)
    return groups


def known_names() -> str:
    """All our names on one line, for error messages."""
    return ", ".join(HUB_MODELS)


def unknown_name_error(name: str) -> CheckpointError:
    """The error for a name that is in no registry, with the closest one when there is one."""
    close = difflib.get_close_matches(name.strip().lower(), [*HUB_MODELS, *_ALIASES], n=1)
    hint = f"did you mean {canonical_model_name(close[0])}? " if close else ""
    return CheckpointError(f"unknown model name {name!r}; {hint}known names: {known_names()}")


def hub_model(name: str) -> HubModel:
    """The registry entry for a name or alias; a CheckpointError naming the known ones if none."""
    canonical = canonical_model_name(name)
    if canonical is None:
        raise unknown_name_error(name)
    return HUB_MODELS[canonical]


def hub_repo(name: str) -> str:
    """The Hugging Face repository for a model name (``gpt2`` -> ``openai-community/gpt2``)."""
    return hub_model(name).repo
