"""Every data file scratchgpt knows: where it comes from, its checksum, its license.

``get_path(name)`` finds a file in this order: an explicit ``local_path`` (checksum verified
unless ``verify=False``), the copy bundled with the package, the download cache, and, only when
``download=True``, a fresh download from the canonical URL. Downloads stream to a temporary file,
are checked against the sha256 below and renamed into the cache only when they match.

Downloads go to ``<cache>/data/`` where ``<cache>`` is ``$SCRATCHGPT_CACHE`` if set, else
``~/.cache/scratchgpt``; a ``cache_dir`` argument names the folder to use instead.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from scratchgpt.errors import Advice, DataError
from scratchgpt.fileio import (
    PathLike,
    atomic_path,
    cache_root,
    disk_errno,
    make_folder,
    output_errors,
    read_text,
)


@dataclass(frozen=True)
class Source:
    """One known data file."""

    name: str
    filename: str  # path inside the cache folder (and inside the bundled assets, if bundled)
    url: str
    sha256: str
    license: str
    description: str
    bundled: bool = True
    # The URL is a zip archive and the file is this member of it; sha256 is the member's.
    archive_member: str | None = None

    @property
    def bundled_path(self) -> Path | None:
        """The copy shipped with scratchgpt, or None."""
        if not self.bundled:
            return None
        from scratchgpt.assets import ASSETS_DIR

        p = ASSETS_DIR / self.filename
        return p if p.is_file() else None


_OPENAI = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main"
_BOOK = "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07"

SOURCES: dict[str, Source] = {
    s.name: s
    for s in [
        Source(
            "gpt2-encoder",
            "gpt2/encoder.json",
            f"{_OPENAI}/encoder.json",
            "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
            "MIT (OpenAI gpt-2)",
            "GPT-2 byte-level BPE vocabulary (token -> id, 50,257 entries)",
        ),
        Source(
            "gpt2-vocab",
            "gpt2/vocab.bpe",
            f"{_OPENAI}/vocab.bpe",
            "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
            "MIT (OpenAI gpt-2)",
            "GPT-2 BPE merge list (50,000 merges, rank = line order)",
        ),
        Source(
            "the-verdict",
            "the-verdict.txt",
            "https://en.wikisource.org/wiki/The_Verdict",
            "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f",
            "public domain",
            '"The Verdict", short story by Edith Wharton (1908), 20,479 characters',
        ),
        Source(
            "sms-spam",
            "SMSSpamCollection",
            "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip",
            "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d",
            "CC BY 4.0 (Almeida & Gomez Hidalgo, UCI ML Repository)",
            "SMS Spam Collection v.1: 5,574 lines 'label<TAB>text' (4,827 ham, 747 spam)",
            archive_member="SMSSpamCollection",
        ),
        Source(
            "instruction-data",
            "instruction-data.json",
            f"{_BOOK}/01_main-chapter-code/instruction-data.json",
            "7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944",
            "Apache-2.0",
            "1,100 instruction/input/output records (Alpaca-style)",
        ),
        Source(
            "instruction-data-with-preference",
            "instruction-data-with-preference.json",
            f"{_BOOK}/04_preference-tuning-with-dpo/instruction-data-with-preference.json",
            "305315abf14f65fa42c01a0877572f832606571c2a7d49f152ac1d758b16756e",
            "Apache-2.0",
            'the same 1,100 records with "chosen"/"rejected" responses (preference tuning)',
        ),
        Source(
            "mmlu",
            "mmlu/data.tar",
            "https://people.eecs.berkeley.edu/~hendrycks/data.tar",
            "bec563ba4bac1d6aaf04141cd7d1605d7a5ca833e38f994051e818489592989b",
            "MIT (Hendrycks et al., Measuring Massive Multitask Language Understanding, ICLR 2021)",
            "MMLU: 57 subjects of 4-way multiple-choice questions (dev/val/test CSV files); "
            "`evaluate choice --data mmlu` scores its 14,042 test questions",
            bundled=False,
        ),
    ]
}

_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    """``$SCRATCHGPT_CACHE``, else ``~/.cache/scratchgpt``."""
    return cache_root()


def get_source(name: str) -> Source:
    """The registry entry for ``name``; a DataError listing the known names otherwise."""
    try:
        return SOURCES[name]
    except KeyError:
        raise DataError(f"unknown data source {name!r}; known: {', '.join(SOURCES)}") from None


def list_sources() -> list[Source]:
    """All registry entries, in registry order."""
    return list(SOURCES.values())


def sha256_file(path: PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def data_cache_dir() -> Path:
    """Where downloaded data files go by default: ``<cache>/data`` (models go to ``<cache>/models``)."""
    return default_cache_dir() / "data"


def cache_path(name: str, cache_dir: PathLike | None = None) -> Path:
    """Where ``download`` puts ``name`` (whether or not it is there yet)."""
    root = Path(cache_dir) if cache_dir is not None else data_cache_dir()
    return root / get_source(name).filename


def _verify(path: Path, source: Source, what: str, advice: Advice) -> None:
    digest = sha256_file(path)
    if digest != source.sha256:
        raise DataError(
            f"{path}: sha256 mismatch for {what} {source.name!r}: got {digest}, expected "
            f"{source.sha256}",
            advice,
        )


def _redownload(name: str) -> Advice:
    return Advice(
        "delete it or re-download with force=True",
        f"delete it or run `scratchgpt data download {name} --force`",
    )


# Python users name a local copy; the command line downloads from another URL (file:// works).
_LOCAL_COPY = Advice(
    "pass local_path=... to a copy you trust, or use the bundled copy",
    "pass --url with a mirror or the file:// URL of a copy you trust",
    "--url",
)


def get_path(
    name: str,
    *,
    local_path: PathLike | None = None,
    download: bool = False,
    cache_dir: PathLike | None = None,
    verify: bool = True,
) -> Path:
    """Path of a known data file: local_path -> bundled copy -> cache -> download (if allowed)."""
    source = get_source(name)
    if local_path is not None:
        p = Path(local_path)
        if not p.is_file():
            raise DataError(f"{p}: local copy of {name!r} not found (local_path)")
        if verify:
            _verify(
                p,
                source,
                "local copy of",
                Advice("pass verify=False to use a modified copy anyway"),
            )
        return p
    bundled = source.bundled_path
    if bundled is not None:
        return bundled
    cached = cache_path(name, cache_dir)
    if cached.is_file():
        _verify(cached, source, "cached", _redownload(name))
        return cached
    if download:
        return _download(name, cache_dir=cache_dir)
    raise DataError(
        f"{name!r} is not bundled and not in the cache ({cached})",
        Advice(
            "pass download=True, or local_path=... to a copy you have",
            f"run `scratchgpt data download {name}`, or give the path of a copy you have instead "
            "of the name",
        ),
    )


def _fetch(url: str, dest: Path, timeout: float) -> None:
    """Stream ``url`` into the open-able path ``dest``. Network failures become a DataError;
    failures to write ``dest`` (a full disk) stay OSErrors for the caller to report."""
    with open(dest, "wb") as out:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                while True:
                    try:
                        chunk = resp.read(_CHUNK)
                    except (OSError, ValueError) as e:
                        raise _unreachable(url, e) from None
                    if not chunk:
                        break
                    out.write(chunk)
        except DataError:
            raise
        except urllib.error.HTTPError as e:
            raise DataError(
                f"could not download {url}: the server answered HTTP {e.code} {e.reason}",
                _LOCAL_COPY,
            ) from None
        except (urllib.error.URLError, ValueError) as e:
            raise _unreachable(url, e) from None
        except OSError as e:
            if e.filename is None and disk_errno(e) is None:  # connecting, not writing
                raise _unreachable(url, e) from None
            raise


def _unreachable(url: str, e: BaseException) -> DataError:
    reason = getattr(e, "reason", e)
    return DataError(f"could not reach {url}: {reason}", _LOCAL_COPY)


def _extract_member(archive: Path, member: str, dest: Path, url: str) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n.rsplit("/", 1)[-1] == member]
            if not names:
                raise DataError(
                    f"{url}: the zip archive holds no file named {member!r} "
                    f"(it holds: {', '.join(zf.namelist()[:10])})"
                )
            with zf.open(names[0]) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)
    except zipfile.BadZipFile as e:
        raise DataError(f"{url}: the download is not a valid zip archive ({e})") from None


def download(
    name: str,
    cache_dir: PathLike | None = None,
    force: bool = False,
    timeout: float = 60.0,
    *,
    url: str | None = None,
) -> Path:
    """Download ``name`` into the cache (sha256 checked, atomic), or return the cached copy.

    ``url`` overrides the canonical URL (a mirror, or a ``file://`` URL); the checksum still
    applies. Nothing is left in the cache when the check fails.
    """
    source = get_source(name)
    dest = cache_path(name, cache_dir)
    if dest.is_file() and not force:
        _verify(dest, source, "cached", _redownload(name))
        return dest
    url = url or source.url
    make_folder(dest.parent)
    # A full or read-only cache folder is one OutputError naming the cache file.
    with (
        output_errors(dest),
        tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.download-") as tmp,
    ):
        fetched = Path(tmp) / "download"
        _fetch(url, fetched, timeout)
        payload = fetched
        if source.archive_member is not None:
            payload = Path(tmp) / source.archive_member
            _extract_member(fetched, source.archive_member, payload, url)
        digest = sha256_file(payload)
        if digest != source.sha256:
            raise DataError(
                f"{url}: sha256 mismatch for {name!r}: got {digest}, expected {source.sha256}; "
                "the file on the server changed or the download was corrupted; nothing was saved",
                _LOCAL_COPY,
            )
        with atomic_path(dest) as out:
            os.replace(payload, out)
    return dest


# get_path's `download` flag shadows the function inside it.
_download = download


def load_text(name: str, **kwargs: object) -> str:
    """The text of a known file, e.g. ``load_text("the-verdict")`` (kwargs go to ``get_path``)."""
    return read_text(get_path(name, **kwargs))  # type: ignore[arg-type]
