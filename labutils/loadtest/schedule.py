"""Load shapes as pure, seeded schedules (no network, no clock).

A :class:`Schedule` is computed up front from a seed: the open-loop arrival offsets (constant,
Poisson or gamma gaps) or a closed-loop concurrency, and the prompt of every request. The same
seed always gives the same schedule, so two runs (or two tools) see identical load.

Definitions follow ``vllm bench serve`` (``vllm/benchmarks/serve.py``); gamma gaps use its
``burstiness`` convention (shape = burstiness, mean gap = 1 / rate; burstiness 1 is Poisson,
below 1 burstier).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import pandas as pd

from labutils.errors import LoadTestError

__all__ = [
    "ARRIVALS",
    "Schedule",
    "arrival_offsets_s",
    "closed_loop",
    "make_prompt",
    "make_prompts",
    "open_loop",
    "sweep",
]

Arrival = Literal["constant", "poisson", "gamma"]
ARRIVALS: tuple[str, ...] = ("constant", "poisson", "gamma")

# Short common English words: byte-level BPE tokenizers map each (with its leading space) to
# about one token, so a prompt of N words is close to N input tokens. The server's `usage`
# reports the exact count; this only aims the input length.
_WORD_TEXT = (
    "time year people way day man thing woman life child world school state family student "
    "group country problem hand part place case week company system program question work "
    "government number night point home water room mother area money story fact month lot "
    "right study book eye job word business issue side kind head house service friend father "
    "power hour game line end member law car city name team minute idea kid body back parent "
    "face others level office door health person art war history party result change morning "
    "reason research girl guy moment air teacher force education foot boy age policy music "
    "market sense nation plan college interest death course someone light voice river table "
    "green small large early young important few public bad same able red blue open cold warm"
)
_WORDS = tuple(_WORD_TEXT.split())

# Mixed with the seed and block number into one seed sequence per block of prompts.
_PROMPT_STREAM = 0x5EED
_PROMPT_BLOCK = 256


def make_prompt(seed: int, index: int, input_tokens: int) -> str:
    """Return request ``index``'s prompt: ``input_tokens`` seeded words.

    Every request gets different words from its first token on, so a prefix cache cannot
    flatter the server. Same as ``make_prompts(seed, index, 1, input_tokens)[0]``.
    """
    return make_prompts(seed, index, 1, input_tokens)[0]


def make_prompts(seed: int, start: int, count: int, input_tokens: int) -> list[str]:
    """Prompts of requests ``start .. start+count-1`` (deterministic in seed and index).

    Words are drawn per block of ``_PROMPT_BLOCK`` requests from one generator seeded with
    (seed, block), so a whole schedule's prompts cost a few vectorized draws.
    """
    if input_tokens < 1:
        raise LoadTestError(f"input_tokens={input_tokens}: give at least 1 token per prompt")
    prompts: list[str] = []
    words = np.array(_WORDS, dtype=object)
    first_block, last_block = start // _PROMPT_BLOCK, (start + count - 1) // _PROMPT_BLOCK
    for block in range(first_block, last_block + 1):
        rng = np.random.default_rng([_PROMPT_STREAM, seed, block])
        picks = words[rng.integers(0, len(_WORDS), size=(_PROMPT_BLOCK, input_tokens))]
        lo = max(start, block * _PROMPT_BLOCK) - block * _PROMPT_BLOCK
        hi = min(start + count, (block + 1) * _PROMPT_BLOCK) - block * _PROMPT_BLOCK
        prompts += [" ".join(row) for row in picks[lo:hi]]
    return prompts


def arrival_offsets_s(
    arrival: str,
    rate_rps: float,
    *,
    seed: int = 0,
    burstiness: float = 1.0,
    requests: int | None = None,
    duration_s: float | None = None,
) -> np.ndarray:
    """Send offsets (seconds from the start, non-decreasing) of an open-loop schedule.

    Args:
        arrival: ``constant`` (gaps of exactly 1/rate), ``poisson`` (exponential gaps) or
            ``gamma`` (gamma gaps with shape ``burstiness``, mean 1/rate).
        rate_rps: mean arrival rate in requests per second.
        seed: random seed; the same seed gives the same offsets.
        burstiness: gamma shape (only for ``gamma``); 1 equals Poisson, < 1 is burstier.
        requests: at most this many arrivals.
        duration_s: only arrivals strictly before this offset.

    Raises:
        LoadTestError: unknown arrival, non-positive rate/burstiness, or no bound given.
    """
    if arrival not in ARRIVALS:
        raise LoadTestError(f"arrival={arrival!r}: choose one of {', '.join(ARRIVALS)}")
    if not rate_rps > 0:
        raise LoadTestError(f"rate_rps={rate_rps}: give a positive request rate")
    if arrival == "gamma" and not burstiness > 0:
        raise LoadTestError(f"burstiness={burstiness}: give a positive gamma shape (1 = Poisson)")
    _check_bounds(requests, duration_s)
    rng = np.random.default_rng(seed)
    mean_gap_s = 1.0 / rate_rps

    def gaps(n: int) -> np.ndarray:
        if arrival == "constant":
            return np.full(n, mean_gap_s)
        if arrival == "poisson":
            return rng.exponential(mean_gap_s, size=n)
        return rng.gamma(burstiness, mean_gap_s / burstiness, size=n)

    if requests is not None and duration_s is None:
        # The first request goes at 0: the schedule starts when the test starts.
        return np.concatenate([[0.0], np.cumsum(gaps(requests - 1))]) if requests else np.zeros(0)

    assert duration_s is not None
    cap = requests if requests is not None else np.iinfo(np.int64).max
    chunks = [np.zeros(1)]
    last_s, count = 0.0, 1
    while last_s < duration_s and count < cap:
        chunk = last_s + np.cumsum(gaps(max(64, int(rate_rps * duration_s * 0.25) + 1)))
        chunks.append(chunk)
        last_s, count = float(chunk[-1]), count + len(chunk)
    offsets = np.concatenate(chunks)
    offsets = offsets[offsets < duration_s]
    return offsets[: min(len(offsets), cap)]


@dataclass(frozen=True)
class Schedule:
    """A load shape, fully determined by its fields (and so by its seed).

    Open loop: ``offsets_s`` holds every request's send offset. Closed loop: ``offsets_s`` is
    empty and ``concurrency`` users each send their next request when the previous one ends,
    until ``requests`` are sent or ``duration_s`` has passed.
    """

    arrival: str  # constant | poisson | gamma | closed
    input_tokens: int
    output_tokens: int
    seed: int = 0
    rate_rps: float | None = None
    burstiness: float = 1.0
    concurrency: int | None = None
    requests: int | None = None
    duration_s: float | None = None
    offsets_s: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    @property
    def is_open_loop(self) -> bool:
        """True when arrivals do not wait for responses."""
        return self.arrival != "closed"

    @property
    def num_requests(self) -> int | None:
        """Number of requests planned (None: a closed loop bounded only by duration)."""
        return len(self.offsets_s) if self.is_open_loop else self.requests

    def prompt(self, index: int) -> str:
        """The prompt of request ``index`` (deterministic in seed and index)."""
        return make_prompt(self.seed, index, self.input_tokens)

    def prompts(self, start: int, count: int) -> list[str]:
        """Prompts of requests ``start .. start+count-1`` at once (much faster than one by one)."""
        return make_prompts(self.seed, start, count, self.input_tokens)

    def label(self) -> str:
        """Short name for tables and plot legends, e.g. ``poisson@20rps`` or ``c=8``."""
        if self.is_open_loop:
            return f"{self.arrival}@{self.rate_rps:g}rps"
        return f"c={self.concurrency}"

    def to_frame(self) -> pd.DataFrame:
        """One row per planned request: index, offset_s (NaN in a closed loop), tokens."""
        count = self.num_requests or 0
        offsets = self.offsets_s if self.is_open_loop else np.full(count, np.nan)
        return pd.DataFrame(
            {
                "index": np.arange(count),
                "offset_s": offsets,
                "input_tokens": self.input_tokens,
                "max_tokens": self.output_tokens,
            }
        )


def open_loop(
    rate_rps: float,
    *,
    arrival: str = "poisson",
    burstiness: float = 1.0,
    requests: int | None = None,
    duration_s: float | None = None,
    input_tokens: int = 128,
    output_tokens: int = 64,
    seed: int = 0,
) -> Schedule:
    """An open-loop schedule: requests go at their offsets whatever the server does.

    Bounded by ``requests``, ``duration_s`` or both (whichever ends first).
    """
    _check_tokens(input_tokens, output_tokens)
    offsets = arrival_offsets_s(
        arrival,
        rate_rps,
        seed=seed,
        burstiness=burstiness,
        requests=requests,
        duration_s=duration_s,
    )
    return Schedule(
        arrival=arrival,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        seed=seed,
        rate_rps=float(rate_rps),
        burstiness=float(burstiness) if arrival == "gamma" else 1.0,
        requests=requests,
        duration_s=duration_s,
        offsets_s=offsets,
    )


def closed_loop(
    concurrency: int,
    *,
    requests: int | None = None,
    duration_s: float | None = None,
    input_tokens: int = 128,
    output_tokens: int = 64,
    seed: int = 0,
) -> Schedule:
    """A closed-loop schedule: ``concurrency`` users, each waiting for its previous answer."""
    _check_tokens(input_tokens, output_tokens)
    if concurrency < 1:
        raise LoadTestError(f"concurrency={concurrency}: give at least 1 concurrent user")
    _check_bounds(requests, duration_s)
    return Schedule(
        arrival="closed",
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        seed=seed,
        concurrency=concurrency,
        requests=requests,
        duration_s=duration_s,
    )


def sweep(
    base: Schedule,
    *,
    rates_rps: Sequence[float] | None = None,
    concurrencies: Sequence[int] | None = None,
) -> list[Schedule]:
    """Copies of ``base`` over rates (open loop) or concurrencies (closed loop).

    Each step gets its own seed (``base.seed + step``) so steps do not replay the same prompts.
    """
    if (rates_rps is None) == (concurrencies is None):
        raise LoadTestError("sweep: give exactly one of rates_rps or concurrencies")
    steps: list[Schedule] = []
    if rates_rps is not None:
        if not base.is_open_loop:
            raise LoadTestError("sweep over rates needs an open-loop base schedule")
        for step, rate in enumerate(rates_rps):
            steps.append(
                open_loop(
                    rate,
                    arrival=base.arrival,
                    burstiness=base.burstiness,
                    requests=base.requests,
                    duration_s=base.duration_s,
                    input_tokens=base.input_tokens,
                    output_tokens=base.output_tokens,
                    seed=base.seed + step,
                )
            )
        return steps
    assert concurrencies is not None
    for step, users in enumerate(concurrencies):
        if users < 1:
            raise LoadTestError(f"concurrency={users}: give at least 1 concurrent user")
        steps.append(
            replace(
                base,
                arrival="closed",
                concurrency=int(users),
                seed=base.seed + step,
                rate_rps=None,
                offsets_s=np.zeros(0),
            )
        )
    return steps


def _check_bounds(requests: int | None, duration_s: float | None) -> None:
    if requests is None and duration_s is None:
        raise LoadTestError("unbounded load: give requests=N, duration_s=S or both")
    if requests is not None and requests < 1:
        raise LoadTestError(f"requests={requests}: give at least 1 request")
    if duration_s is not None and not duration_s > 0:
        raise LoadTestError(f"duration_s={duration_s}: give a positive duration")


def _check_tokens(input_tokens: int, output_tokens: int) -> None:
    if input_tokens < 1 or output_tokens < 1:
        raise LoadTestError(
            f"input_tokens={input_tokens}, output_tokens={output_tokens}: both must be >= 1"
        )
