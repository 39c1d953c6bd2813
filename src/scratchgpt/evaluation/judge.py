"""LLM-as-judge (the book's section 7.8): a larger model scores each response from 0 to 100.

The client speaks to an Ollama ``/api/chat`` endpoint or any OpenAI-compatible
``/v1/chat/completions`` endpoint over plain HTTP (urllib), with temperature 0 and a fixed seed,
a timeout, and retries with exponential back-off for connection errors, timeouts, 429 and 5xx.
A reply that holds no integer in 0..100 is counted as unparseable, never a crash.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from scratchgpt.data.instructions import DEFAULT_STYLE, format_input
from scratchgpt.errors import ConfigError, DataError, ScratchGPTError

OLLAMA_PATH = "/api/chat"
OPENAI_PATH = "/v1/chat/completions"
DEFAULT_SEED = 123
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


class JudgeError(ScratchGPTError):
    """The judge could not be reached or refused the request."""


def judge_prompt(
    entry: Mapping[str, str], response_key: str = "model_response", style: str = DEFAULT_STYLE
) -> str:
    """The book's scoring prompt for one record."""
    return (
        f"Given the input `{format_input(entry, style)}` "
        f"and correct output `{entry['output']}`, "
        f"score the model response `{entry[response_key]}`"
        f" on a scale from 0 to 100, where 100 is the best score. "
        f"Respond with the integer number only."
    )


# A whole number or decimal, not part of a word, a version string or a longer number.
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?!\w|\.\d)")


def parse_score(reply: str | None, low: int = 0, high: int = 100) -> tuple[int | None, str]:
    """(score, status) from a judge's reply. Status: ``ok``, ``missing`` (no reply),
    ``no_number`` (words only), ``out_of_range``, ``ambiguous`` (several different numbers).

    "85", " 85.\\n", "Score: 85", "85/100", "I would rate it 85 out of 100." all give 85; a
    decimal is rounded; ``x/100``-style denominators and "out of 100" are not read as scores.
    """
    if reply is None or not str(reply).strip():
        return None, "missing"
    text = str(reply).strip()
    # Drop the scale ("/100", "out of 100") so it is not taken for a second score.
    cleaned = re.sub(r"(/\s*100\b|\bout of\s+100\b)", " ", text, flags=re.IGNORECASE)
    numbers = [float(m.group()) for m in _NUMBER.finditer(cleaned)]
    if not numbers:
        return None, "no_number"
    # "between 80 and 90" is no score; "85. The answer misses 2 facts" leads with one.
    leads = re.match(r"^\W*(score\s*[:=]?\s*)?-?\d", cleaned, flags=re.IGNORECASE)
    if len({round(n) for n in numbers}) > 1 and not leads:
        return None, "ambiguous"
    value = round(numbers[0])
    if not low <= value <= high:
        return None, "out_of_range"
    return int(value), "ok"


def detect_api(url: str) -> str:
    """``openai`` for a URL with ``/v1``, else ``ollama``."""
    path = urllib.parse.urlparse(url).path
    return "openai" if "/v1" in path else "ollama"


def endpoint_url(url: str, api: str) -> str:
    """The full endpoint: a bare ``http://host:port`` gets the API's default path."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(
            f"judge URL {url!r} must be http(s)://host:port[/path], e.g. "
            f"http://localhost:11434{OLLAMA_PATH}"
        )
    path = parsed.path.rstrip("/")
    if not path:
        path = OPENAI_PATH if api == "openai" else OLLAMA_PATH
    elif api == "openai" and path.endswith("/v1"):
        path += "/chat/completions"
    return urllib.parse.urlunparse(parsed._replace(path=path))


@dataclass
class JudgeClient:
    """Sends one prompt to a chat endpoint and returns the reply text."""

    url: str
    model: str
    api: str = "auto"  # auto | ollama | openai
    api_key: str | None = None
    timeout: float = 60.0
    retries: int = 3  # extra attempts after the first
    backoff: float = 1.0  # seconds before the first retry; doubles each time
    seed: int = DEFAULT_SEED
    temperature: float = 0.0
    num_ctx: int = 2048
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def __post_init__(self) -> None:
        if self.api == "auto":
            self.api = detect_api(self.url)
        if self.api not in ("ollama", "openai"):
            raise ConfigError(f"judge API must be auto, ollama or openai, got {self.api!r}")
        self.endpoint = endpoint_url(self.url, self.api)
        if self.timeout <= 0 or self.retries < 0 or self.backoff < 0:
            raise ConfigError("judge timeout must be > 0, retries and backoff >= 0")

    def _payload(self, prompt: str) -> dict[str, Any]:
        messages = [{"role": "user", "content": prompt}]
        if self.api == "ollama":
            return {
                "model": self.model,
                "messages": messages,
                "stream": False,
                "options": {
                    "seed": self.seed,
                    "temperature": self.temperature,
                    "num_ctx": self.num_ctx,
                },
            }
        return {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "seed": self.seed,
        }

    def _extract(self, body: str) -> str | None:
        """The reply text of a response body (None when it holds none)."""
        if self.api == "ollama":
            # Ollama streams JSON lines unless "stream": false; accept both.
            parts = []
            for line in body.splitlines():
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    return None
                content = (
                    (obj.get("message") or {}).get("content") if isinstance(obj, dict) else None
                )
                if isinstance(content, str):
                    parts.append(content)
            return "".join(parts) if parts else None
        try:
            obj = json.loads(body)
            content = obj["choices"][0]["message"]["content"]
        except (json.JSONDecodeError, KeyError, IndexError, TypeError):
            return None
        return content if isinstance(content, str) else None

    def ask(self, prompt: str) -> str | None:
        """The judge's reply to ``prompt`` (None if the answer held no text); a JudgeError when
        every attempt failed or the server refused the request."""
        data = json.dumps(self._payload(prompt)).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.sleep(self.backoff * 2 ** (attempt - 1))
            req = urllib.request.Request(self.endpoint, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    body = resp.read().decode("utf-8", errors="replace")
                return self._extract(body)
            except urllib.error.HTTPError as e:
                detail = e.read().decode("utf-8", errors="replace")[:200]
                last = f"HTTP {e.code} {e.reason}: {detail}"
                if e.code not in RETRY_STATUS:
                    raise JudgeError(
                        f"judge at {self.endpoint} refused the request ({last}); check the "
                        "model name, the API style (--judge-api) and the API key"
                    ) from None
            except TimeoutError:
                last = f"no answer within {self.timeout:g} s"
            except urllib.error.URLError as e:
                reason = e.reason
                if isinstance(reason, TimeoutError):
                    last = f"no answer within {self.timeout:g} s"
                else:
                    last = f"cannot connect ({reason})"
            except (ConnectionError, OSError) as e:
                last = f"connection failed ({e})"
        raise JudgeError(
            f"judge at {self.endpoint} failed after {self.retries + 1} attempt(s): {last}. Is the "
            "server running (e.g. `ollama serve`) and the URL right? Raise --timeout or "
            "--retries for a slow judge"
        )


def score_bucket(score: int) -> str:
    """Histogram bucket of a score: 0-9, 10-19, ..., 90-100."""
    lo = min(score // 10, 9) * 10
    return f"{lo}-{lo + 9}" if lo < 90 else "90-100"


def judge_responses(
    records: Sequence[Mapping[str, Any]],
    client: JudgeClient,
    *,
    response_key: str = "model_response",
    style: str = DEFAULT_STYLE,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Score every record; a report with the mean over scored items, counts, the distribution
    and per-item results. A failure on the first item aborts (the judge is not usable); later
    failures are counted. ``progress``: a bar on a terminal, a line every few seconds elsewhere
    (None), or nothing (False)."""
    from scratchgpt.progress import progress as progress_bar

    for i, rec in enumerate(records):
        for key in ("instruction", "output", response_key):
            if not isinstance(rec.get(key) if isinstance(rec, Mapping) else None, str):
                raise DataError(
                    f"responses record {i}: field {key!r} missing or not a string; the file "
                    "should come from `scratchgpt respond` or `finetune-instruct` (responses.json)"
                )
    items: list[dict[str, Any]] = []
    statuses: dict[str, int] = {}
    bar = progress_bar(records, desc="judging", unit="responses", enabled=progress)
    for i, rec in enumerate(bar):
        try:
            reply = client.ask(judge_prompt(rec, response_key, style))
        except JudgeError as e:
            if i == 0:
                raise
            items.append(
                {"index": i, "score": None, "status": "failed", "reply": None, "error": str(e)}
            )
            statuses["failed"] = statuses.get("failed", 0) + 1
            continue
        score, status = parse_score(reply)
        items.append({"index": i, "score": score, "status": status, "reply": reply})
        statuses[status] = statuses.get(status, 0) + 1
        scored_so_far = [it["score"] for it in items if it["score"] is not None]
        if scored_so_far:
            bar.set_postfix(mean=f"{sum(scored_so_far) / len(scored_so_far):.1f}")
    bar.close()
    scores = [it["score"] for it in items if it["score"] is not None]
    distribution = {score_bucket(s): 0 for s in range(0, 101, 10)}
    for s in scores:
        distribution[score_bucket(s)] += 1
    failed = statuses.get("failed", 0)
    return {
        "judge": {
            "endpoint": client.endpoint,
            "api": client.api,
            "model": client.model,
            "seed": client.seed,
            "temperature": client.temperature,
        },
        "response_key": response_key,
        "total": len(records),
        "scored": len(scores),
        "unparseable": len(records) - len(scores) - failed,
        "failed": failed,
        "mean": (sum(scores) / len(scores)) if scores else None,
        "statuses": statuses,
        "distribution": distribution,
        "items": items,
    }


def api_key_from_env(name: str | None) -> str | None:
    """The API key in environment variable ``name`` (None when unset or no name)."""
    if not name:
        return None
    value = os.environ.get(name)
    return value or None
