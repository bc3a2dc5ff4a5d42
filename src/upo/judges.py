"""Judges: does a response beat a reference response to the same prompt?

`compare(prompts, responses, references)` gives one outcome per item: 1.0 when the response wins,
0.0 when it loses, 0.5 for a tie, None when the judge gave no readable verdict; `win_rate` averages
the outcomes that are not None (a tie counts half).

- RewardModelJudge: a reward model (`rm:PATH`, upo.rewards.reward_model) scores both; the higher
  score wins, exactly equal scores tie. Scores go through the score cache when one is given.
- LLMJudge: an OpenAI-compatible chat endpoint (`POST {base_url}/chat/completions`) is asked which
  response is more helpful, harmless and concise, at temperature 0, by a protocol of
  `upo.judge_protocols`: `swap` (both orders, a flip is a tie) or `paper` (the UPO paper's: one
  randomized order per item, or both when asked). A reply naming neither response counts for
  neither side. The API key is read from the environment on each request, never stored, logged or
  put in an error message.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from upo import judge_protocols as protocols
from upo.data.records import Prompt, prompt_text
from upo.rewards.cache import ScoreCache
from upo.rewards.reward_model import PREFIX, reward_model_scorer, reward_model_version

OUTCOMES = (0.0, 0.5, 1.0)


def win_rate(outcomes: Sequence[float | None]) -> float:
    """Mean of the outcomes that are not None: wins count 1, ties 0.5, losses 0."""
    bad = [o for o in outcomes if o is not None and o not in OUTCOMES]
    if bad:
        raise ValueError(f"win_rate: outcomes must be 0, 0.5, 1 or None, got {bad[0]!r}")
    decided = [o for o in outcomes if o is not None]
    if not decided:
        raise ValueError("win_rate: no outcomes with a verdict")
    return sum(decided) / len(decided)


def _check_lengths(prompts: Sequence, responses: Sequence[str], references: Sequence[str]) -> None:
    if not len(prompts) == len(responses) == len(references):
        raise ValueError(f"compare: {len(prompts)} prompts, {len(responses)} responses, {len(references)} references")


# ---- reward model -------------------------------------------------------------------------------

DEFAULT_RM_MAX_LENGTH = 512  # reward_model_scorer's default: its scores share the cache with the `rm:` reward's


class RewardModelJudge:
    """Win when the reward model scores the response above the reference; exactly equal scores tie."""

    name = "rm"

    def __init__(self, path: str, batch_size: int = 16, max_length: int = 512, cache: ScoreCache | None = None,
                 progress: bool = False):
        self.path = path
        self.cache = cache
        self._score = reward_model_scorer(path, batch_size=batch_size, max_length=max_length, progress=progress,
                                          desc="judge")
        # the cache key of `rm:PATH` scores; another max_length can give other scores, so another key
        self._cache_name = PREFIX + path
        self._version = reward_model_version(path)
        if max_length != DEFAULT_RM_MAX_LENGTH:
            self._version += f"-max{max_length}"

    def __repr__(self) -> str:
        return f"RewardModelJudge(path={self.path!r})"

    def scores(self, prompts: Sequence[str], texts: Sequence[str]) -> list[float]:
        """The reward of each (prompt, text): cached ones looked up, each distinct one scored once
        (so identical texts get identical scores whatever their batch)."""
        pairs = list(zip(prompts, texts, strict=True))
        unique = list(dict.fromkeys(pairs))
        u_prompts, u_texts = [p for p, _ in unique], [t for _, t in unique]
        found = self.cache.get_many(self._cache_name, self._version, u_prompts, u_texts) if self.cache else [None] * len(unique)
        missing = [i for i, s in enumerate(found) if s is None]
        if missing:
            new = self._score([u_prompts[i] for i in missing], [u_texts[i] for i in missing])
            if not all(math.isfinite(s) for s in new):
                raise ValueError(f"reward model {self.path} returned a non-finite score")
            for i, s in zip(missing, new, strict=True):
                found[i] = float(s)
            if self.cache is not None:
                self.cache.put_many(self._cache_name, self._version, [u_prompts[i] for i in missing],
                                    [u_texts[i] for i in missing], new)
        score_of = dict(zip(unique, found, strict=True))
        return [score_of[pair] for pair in pairs]

    def compare(self, prompts: Sequence[Prompt], responses: Sequence[str], references: Sequence[str]) -> list[float]:
        """A prompt is a string or chat messages (read as `prompt_text`, like the `rm:PATH` reward)."""
        _check_lengths(prompts, responses, references)
        n = len(prompts)
        scores = self.scores([prompt_text(p) for p in prompts] * 2, list(responses) + list(references))
        return [1.0 if r > ref else 0.0 if r < ref else 0.5 for r, ref in zip(scores[:n], scores[n:], strict=True)]


# ---- LLM ------------------------------------------------------------------------------------------

RETRYABLE_STATUS = (408, 409, 429)  # and every 5xx


class JudgeError(RuntimeError):
    """The judge's endpoint failed (after retries, where retrying could help). Never holds the API key."""


class LLMJudge:
    """Ask an OpenAI-compatible chat endpoint which of two responses is better, by a protocol
    (`upo.judge_protocols`: `swap`, both orders, or `paper`, the paper's randomized single order)."""

    name = "llm"

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout: float = 60,
                 max_retries: int = 4, backoff: float = 1.0, concurrency: int = 4, preset: str = "swap",
                 both_orders: bool = False, seed: int = 0):
        if max_retries < 0 or backoff < 0 or concurrency < 1 or timeout <= 0:
            raise ValueError("LLMJudge: need max_retries >= 0, backoff >= 0, concurrency >= 1 and timeout > 0")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env  # the variable's name; its value is read per request, never kept
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.concurrency = concurrency
        self.preset = preset
        self.protocol = protocols.preset(preset)
        self.both_orders = both_orders
        self.seed = seed  # the random orders' seed, also sent to the endpoint

    def check_reachable(self) -> None:
        """A JudgeError now, before any generation, when nothing answers at the base URL (connection
        refused, unknown host, not an http(s) URL): a GET of its /models, where any HTTP reply, even an
        error status, counts as reachable."""
        base = self.url[: -len("/chat/completions")]
        if urllib.parse.urlparse(base).scheme not in ("http", "https"):
            raise JudgeError(f"judge_base_url {base!r} is not an http(s) URL (e.g. http://127.0.0.1:8000/v1)")
        try:
            with urllib.request.urlopen(urllib.request.Request(base + "/models"), timeout=self.timeout):
                pass
        except urllib.error.HTTPError as e:  # something answers
            e.close()
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as e:
            raise JudgeError(f"LLM judge: nothing answers at judge_base_url {base} ({type(e).__name__}: "
                             f"{getattr(e, 'reason', e)}): start the server or fix the URL") from None

    def __repr__(self) -> str:
        return f"LLMJudge(url={self.url!r}, model={self.model!r}, preset={self.preset!r}, api_key_env={self.api_key_env!r})"

    def judge(self, prompts: Sequence[Prompt], responses: Sequence[str],
              references: Sequence[str]) -> list[protocols.Judgment]:
        """Each item asked in the protocol's order(s) (`judge_protocols.item_orders`); the replies kept
        with their readings. A prompt is a string or chat messages (shown as 'User:' / 'Assistant:' turns)."""
        _check_lengths(prompts, responses, references)
        orders = protocols.item_orders(len(prompts), self.protocol, self.seed, self.both_orders)
        questions = [(prompts[i], *((responses[i], references[i]) if first else (references[i], responses[i])))
                     for i, item in enumerate(orders) for first in item]  # first: the response shown as A
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            replies = iter(list(pool.map(lambda q: self.ask(*q), questions)))
        judgments = []
        for item in orders:
            texts = tuple(next(replies) for _ in item)
            judgments.append(protocols.Judgment(item, texts, tuple(map(self.protocol.parse, texts))))
        return judgments

    def compare(self, prompts: Sequence[Prompt], responses: Sequence[str], references: Sequence[str]) -> list[float | None]:
        """Each item's outcome: the mean of its readable verdicts (1 = the response preferred; a flip
        with the order gives 0.5), None when no reply named a response."""
        return [j.outcome for j in self.judge(prompts, responses, references)]

    def ask(self, prompt: Prompt, a: str, b: str) -> str:
        """The endpoint's reply to 'which is better, A or B?'; under a protocol that retries unreadable
        replies, asked again (with backoff) until one names a response or the retries run out."""
        body = {
            "model": self.model,
            "messages": protocols.build_messages(self.protocol, prompt, a, b),
            "temperature": 0,
            "max_tokens": self.protocol.max_tokens,
            "seed": self.seed,
        }
        attempts = self.max_retries + 1 if self.protocol.retry_unreadable else 1
        for attempt in range(attempts):
            reply = self._post(body)
            if self.protocol.parse(reply) is not None:
                break
            if attempt < attempts - 1:
                time.sleep(self.backoff * 2**attempt)
        return reply

    def _post(self, body: dict) -> str:
        """The reply's text; retries connection errors, timeouts, 408/409/429 and 5xx with
        exponential backoff (or the server's Retry-After, up to 60 s); raises JudgeError otherwise."""
        key = os.environ.get(self.api_key_env)
        headers = {"Content-Type": "application/json"}
        if key:  # local servers often need none
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(body).encode()
        problem, delay = "", 0.0
        for attempt in range(self.max_retries + 1):
            time.sleep(delay)
            delay = self.backoff * 2**attempt  # before the next attempt, unless Retry-After asks for longer
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = json.loads(response.read().decode("utf-8"))
                return str(payload["choices"][0]["message"]["content"] or "")
            except urllib.error.HTTPError as e:
                try:
                    detail = e.read(300).decode("utf-8", "replace")
                except OSError:  # the connection broke while the error body was read
                    detail = ""
                problem = f"HTTP {e.code}: {detail}"
                if e.code not in RETRYABLE_STATUS and e.code < 500:
                    hint = f" (is ${self.api_key_env} set to a valid key?)" if e.code in (401, 403) else ""
                    raise JudgeError(self._redact(f"LLM judge request to {self.url} failed: {problem}{hint}", key)) from None
                retry_after = e.headers.get("Retry-After", "") if e.headers else ""
                if retry_after.strip().isdigit():
                    delay = max(delay, min(float(retry_after), 60.0))
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as e:
                problem = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            except (ValueError, KeyError, IndexError, TypeError) as e:  # not the OpenAI response shape
                raise JudgeError(self._redact(f"LLM judge: unexpected response from {self.url}: {e!r}", key)) from None
        raise JudgeError(self._redact(
            f"LLM judge request to {self.url} failed after {self.max_retries + 1} attempts: {problem}", key)) from None

    @staticmethod
    def _redact(message: str, key: str | None) -> str:
        return message.replace(key, "[redacted]") if key else message
