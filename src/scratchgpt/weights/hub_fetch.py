"""The files of one hub download, chosen from the hub's listing, fetched and verified.

Called by :func:`scratchgpt.weights.hub.download_model`, which turns the hub client's errors
into messages; everything here needs ``huggingface_hub`` and, except :func:`plan_download`, a
network.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scratchgpt.errors import CheckpointError
from scratchgpt.fileio import PathLike, read_json
from scratchgpt.weights.hub_names import HubModel

INDEX_FILE = "model.safetensors.index.json"
# Llama 3.x / Qwen3 also need their tokenizer files; the rest is fetched when the hub lists it.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
OPTIONAL_FILES = ("generation_config.json", "special_tokens_map.json", "chat_template.jinja")


def shard_names(index: Mapping[str, Any], source: str) -> list[str]:
    """The shard files a ``model.safetensors.index.json`` names, in order, each once; a
    CheckpointError for an index without a weight_map or with a name that is not a plain
    ``.safetensors`` file name (the files land beside the index, never elsewhere)."""
    weight_map = index.get("weight_map") if isinstance(index, Mapping) else None
    if not isinstance(weight_map, Mapping) or not weight_map:
        raise CheckpointError(f"{source}: no weight_map naming the shard files")
    names = list(dict.fromkeys(weight_map.values()))
    for n in names:
        if not isinstance(n, str) or not n.endswith(".safetensors") or Path(n).name != n:
            raise CheckpointError(f"{source}: weight_map names {n!r}, not a .safetensors file")
    return names


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class DownloadPlan:
    """What to fetch from one repository, in order: the index (sharded weights), the weight
    files with the sha256 the hub lists for each, then the small files with config.json last
    (a folder without config.json, or without all its weights, never reads as downloaded)."""

    repo: str
    weights: list[str]
    sha256: dict[str, str]
    small: list[str]
    index: str | None = None
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def files(self) -> list[str]:
        """Every file, in the order they are fetched."""
        return [*([self.index] if self.index else []), *self.weights, *self.small]

    def describe(self) -> str:
        """One line: how many files, how large, which."""
        total = sum(self.sizes.get(f, 0) for f in self.files)
        if total >= 1e9:
            size = f", {total / 1e9:.2f} GB"
        else:
            size = f", {total / 1e6:.1f} MB" if total else ""
        return f"{len(self.files)} files{size}: {', '.join(self.files)}"


def _lfs_sha256(sibling: Any) -> str | None:
    """The sha256 of an LFS file in a hub listing (a dict-like BlobLfsInfo), or None."""
    lfs = getattr(sibling, "lfs", None)
    if lfs is None:
        return None
    sha = lfs.get("sha256") if isinstance(lfs, Mapping) else getattr(lfs, "sha256", None)
    return sha if isinstance(sha, str) and sha else None


def _size(sibling: Any) -> int | None:
    size = getattr(sibling, "size", None)
    return size if isinstance(size, int) else None


def plan_download(
    model: HubModel, listing: Mapping[str, Any], read_index: Callable[[], Any]
) -> DownloadPlan:
    """Choose the files of ``model`` from ``listing`` (file name -> the hub's RepoSibling, with
    LFS metadata). ``read_index`` fetches and parses model.safetensors.index.json, called only
    when the weights are sharded. A CheckpointError when a needed file is not listed."""
    repo = model.repo
    required = ["config.json"] if model.family == "gpt2" else ["config.json", *TOKENIZER_FILES]
    missing = [f for f in required if f not in listing]
    if missing:
        raise CheckpointError(
            f"{repo}: the hub lists no {', '.join(missing)}; scratchgpt needs them to load "
            "the model, so this repository cannot be downloaded as it is"
        )
    optional = [] if model.family == "gpt2" else [f for f in OPTIONAL_FILES if f in listing]
    index = None
    if "model.safetensors" in listing:
        weights = ["model.safetensors"]
    elif INDEX_FILE in listing:
        index = INDEX_FILE
        weights = shard_names(read_index(), f"{repo}/{INDEX_FILE}")
    else:
        raise CheckpointError(
            f"{repo}: the hub lists no model.safetensors or {INDEX_FILE}; scratchgpt reads "
            "safetensors weights only"
        )
    sha256 = {}
    for w in weights:
        sha = _lfs_sha256(listing[w]) if w in listing else None
        if sha is None:
            raise CheckpointError(f"{repo}: the hub lists no {w} with a checksum")
        sha256[w] = sha
    # config.json last: until it is there the folder does not look like a model.
    small = [f for f in (*required, *optional) if f != "config.json"] + ["config.json"]
    sizes = {f: s for f in listing if (s := _size(listing[f])) is not None}
    return DownloadPlan(repo, weights, sha256, small, index, sizes)


def fetch_verified(
    model: HubModel, target: Path, *, force: bool, log: Callable[[str], None] | None
) -> dict[str, Any]:
    """Fetch ``model``'s files into ``target`` (resuming partial files), check each weight
    file's sha256 as soon as it is complete (a mismatching file is deleted), and return the
    completion marker's contents. The hub client's own errors propagate."""
    import huggingface_hub

    info = huggingface_hub.HfApi().model_info(model.repo, files_metadata=True)
    listing = {s.rfilename: s for s in info.siblings or []}
    target.mkdir(parents=True, exist_ok=True)

    def fetch(filename: str) -> Path:
        # local_dir: plain files in target; partial ones resume from target/.cache/huggingface.
        huggingface_hub.hf_hub_download(
            model.repo, filename, revision=info.sha, local_dir=target, force_download=force
        )
        return target / filename

    plan = plan_download(model, listing, lambda: read_json(fetch(INDEX_FILE)))
    if log is not None:
        log(f"{model.repo} at revision {str(info.sha)[:12]}: {plan.describe()}")
    for w in plan.weights:
        path = fetch(w)
        got = sha256_file(path)
        if got != plan.sha256[w]:
            path.unlink(missing_ok=True)
            raise CheckpointError(
                f"{path}: sha256 {got} does not match the hub's {plan.sha256[w]}; the file was "
                f"deleted, run `scratchgpt download {model.name}` again"
            )
    for f in plan.small:
        fetch(f)
    marker: dict[str, Any] = {"repo": model.repo, "revision": info.sha, "files": plan.files}
    if plan.weights == ["model.safetensors"]:
        marker["sha256"] = plan.sha256["model.safetensors"]
    marker["weights_sha256"] = plan.sha256
    return marker
