"""The data registry: bundled checksums, lookup order, downloads from a local server (no network)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import re
import socket
import threading
import zipfile
from pathlib import Path

import pytest

from scratchgpt.assets import ASSETS_DIR
from scratchgpt.cli import main
from scratchgpt.data import sources
from scratchgpt.data.sources import SOURCES, download, get_path, load_text
from scratchgpt.errors import DataError

NAMES = [
    "gpt2-encoder",
    "gpt2-vocab",
    "the-verdict",
    "sms-spam",
    "instruction-data",
    "instruction-data-with-preference",
]
DOWNLOAD_ONLY = ["mmlu"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", NAMES)
def test_bundled_copies_match_the_registry_checksums(name):
    source = SOURCES[name]
    path = get_path(name)
    assert path == ASSETS_DIR / source.filename
    assert _sha(path) == source.sha256


def test_registry_agrees_with_notice_file():
    notice = (ASSETS_DIR / "NOTICE.md").read_text()
    for source in SOURCES.values():
        row = next(
            line for line in notice.splitlines() if line.startswith(f"| {source.filename} |")
        )
        assert source.sha256 in row
        assert source.url in row
    assert list(SOURCES) == NAMES + DOWNLOAD_ONLY


def test_load_text_the_verdict():
    text = load_text("the-verdict")
    assert len(text) == 20479
    assert text.startswith("I HAD always thought Jack Gisburn")


def test_unknown_name():
    with pytest.raises(DataError, match="unknown data source 'verdict'; known: gpt2-encoder"):
        get_path("verdict")


def test_local_path_comes_first_and_is_verified(tmp_path):
    good = tmp_path / "verdict.txt"
    good.write_bytes((ASSETS_DIR / "the-verdict.txt").read_bytes())
    assert get_path("the-verdict", local_path=good) == good
    bad = tmp_path / "edited.txt"
    bad.write_text("an edited copy")
    with pytest.raises(DataError, match=r"sha256 mismatch.*verify=False") as e:
        get_path("the-verdict", local_path=bad)
    assert str(bad) in str(e.value)
    assert get_path("the-verdict", local_path=bad, verify=False) == bad
    with pytest.raises(DataError, match="not found"):
        get_path("the-verdict", local_path=tmp_path / "missing.txt")


@pytest.fixture
def unbundled(monkeypatch):
    """Pretend the-verdict is not bundled, so the cache and download steps are reached."""

    def make(url: str | None = None):
        source = dataclasses.replace(SOURCES["the-verdict"], bundled=False)
        if url is not None:
            source = dataclasses.replace(source, url=url)
        monkeypatch.setitem(SOURCES, "the-verdict", source)
        return source

    return make


def test_cache_then_download_order(tmp_path, unbundled):
    original = ASSETS_DIR / "the-verdict.txt"
    remote = tmp_path / "remote" / "verdict.txt"
    remote.parent.mkdir()
    remote.write_bytes(original.read_bytes())
    unbundled(remote.as_uri())
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"not bundled and not in the cache.*download=True"):
        get_path("the-verdict", cache_dir=cache)
    got = get_path("the-verdict", cache_dir=cache, download=True)
    assert got == cache / "the-verdict.txt" and _sha(got) == SOURCES["the-verdict"].sha256
    remote.unlink()  # now only the cache can answer
    assert get_path("the-verdict", cache_dir=cache) == got
    got.write_text("corrupted")
    with pytest.raises(DataError, match="sha256 mismatch for cached"):
        get_path("the-verdict", cache_dir=cache)


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHGPT_CACHE", str(tmp_path / "env-cache"))
    assert sources.cache_path("sms-spam") == tmp_path / "env-cache" / "data" / "SMSSpamCollection"
    monkeypatch.delenv("SCRATCHGPT_CACHE")
    assert sources.default_cache_dir() == Path.home() / ".cache" / "scratchgpt"


class _Server:
    """A static file server on 127.0.0.1 that counts the requests it answers."""

    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        handler = functools.partial(Handler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    s = _Server(root)
    s.root = root
    yield s
    s.close()


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.rglob("*")) if cache.exists() else []


def test_download_from_local_server_is_cached(server, tmp_path):
    (server.root / "v.txt").write_bytes((ASSETS_DIR / "the-verdict.txt").read_bytes())
    cache = tmp_path / "cache"
    path = download("the-verdict", cache, url=f"{server.url}/v.txt")
    assert path == cache / "the-verdict.txt"
    assert _sha(path) == SOURCES["the-verdict"].sha256
    assert server.requests == ["/v.txt"]
    assert download("the-verdict", cache, url=f"{server.url}/v.txt") == path
    assert server.requests == ["/v.txt"]  # cached: no second request
    download("the-verdict", cache, force=True, url=f"{server.url}/v.txt")
    assert len(server.requests) == 2
    assert _leftovers(cache) == ["the-verdict.txt"]


def test_bad_checksum_leaves_nothing_in_the_cache(server, tmp_path):
    (server.root / "v.txt").write_text("not the verdict")
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"sha256 mismatch for 'the-verdict'.*nothing was saved"):
        download("the-verdict", cache, url=f"{server.url}/v.txt")
    assert _leftovers(cache) == []


def test_zip_member_is_extracted_and_verified(server, tmp_path):
    with zipfile.ZipFile(server.root / "sms.zip", "w") as zf:
        zf.write(ASSETS_DIR / "SMSSpamCollection", "SMSSpamCollection")
        zf.writestr("readme", "The SMS Spam Collection v.1")
    cache = tmp_path / "cache"
    path = download("sms-spam", cache, url=f"{server.url}/sms.zip")
    assert path == cache / "SMSSpamCollection"
    assert _sha(path) == SOURCES["sms-spam"].sha256
    assert _leftovers(cache) == ["SMSSpamCollection"]


def test_zip_problems(server, tmp_path):
    with zipfile.ZipFile(server.root / "other.zip", "w") as zf:
        zf.writestr("readme", "no data here")
    (server.root / "plain.zip").write_text("not a zip")
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="holds no file named 'SMSSpamCollection'"):
        download("sms-spam", cache, url=f"{server.url}/other.zip")
    with pytest.raises(DataError, match="not a valid zip"):
        download("sms-spam", cache, url=f"{server.url}/plain.zip")
    assert _leftovers(cache) == []


def test_http_error_and_unreachable_host(server, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="HTTP 404"):
        download("the-verdict", cache, url=f"{server.url}/missing.txt")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v.txt"
    with pytest.raises(DataError, match=re.escape(f"could not reach {url}") + ".*local_path="):
        download("the-verdict", cache, url=url, timeout=5)
    assert _leftovers(cache) == []


def test_file_url_download(tmp_path):
    cache = tmp_path / "cache"
    url = (ASSETS_DIR / "instruction-data.json").as_uri()
    path = download("instruction-data", cache, url=url)
    assert _sha(path) == SOURCES["instruction-data"].sha256


def test_cli_data_list_path_download(server, tmp_path, capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for source in SOURCES.values():
        assert source.name in out and source.url in out and source.license in out
    assert main(["data", "path", "the-verdict"]) == 0
    assert capsys.readouterr().out.strip() == str(ASSETS_DIR / "the-verdict.txt")
    (server.root / "v.txt").write_text("tampered")
    argv = ["data", "download", "the-verdict", "--cache-dir", str(tmp_path / "c")]
    assert main([*argv, "--url", f"{server.url}/v.txt"]) == 2
    assert "sha256 mismatch" in capsys.readouterr().err
