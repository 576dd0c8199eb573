"""Each speed shortcut of the gateway against the plain way it replaced, side by side.

For every shortcut (see PERFORMANCE.md) it runs the gateway's own code and the plain way
(the standard library's or the library's default) on the same work, alternating them
(in reverse order every other round), and prints per-operation times, the median over
rounds of the within-round ratio plain/shortcut, and in how many rounds the shortcut won
(with the sign test's one-sided p-value). Starts its own fake OpenAI upstream on
loopback for the HTTP cases and loads the bundled local model for the model cases.

    python bench/shortcuts.py [--seconds 2] [--rounds 7] [--only NAME ...]

A ratio above 1 is what the shortcut buys; ``KEEP`` marks a ratio of at least 1.05 won
in significantly many rounds (p < 0.05), ``noise`` the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

__all__ = ["Case", "Outcome", "Run", "measure", "run_loop"]

#: Runs ``n`` operations one way; returns the seconds they took.
Run = Callable[[int], float]

MIN_GAIN = 1.05
MAX_P = 0.05


@dataclass
class Case:
    """One shortcut: where it lives, and both ways of doing the same ``n`` operations."""

    name: str
    where: str
    plain: Run
    shortcut: Run
    unit: str = "op"


@dataclass
class Outcome:
    case: Case
    plain_s: float
    shortcut_s: float
    ratio: float
    wins: int
    rounds: int

    @property
    def p_value(self) -> float:
        """One-sided sign test: the chance of this many wins if neither way were faster."""
        n = self.rounds
        return sum(math.comb(n, k) for k in range(self.wins, n + 1)) / (1 << n)

    @property
    def kept(self) -> bool:
        return self.ratio >= MIN_GAIN and self.p_value < MAX_P

    def line(self) -> str:
        verdict = "KEEP " if self.kept else "noise"
        return (
            f"{verdict} {self.case.name:40s} plain {_time(self.plain_s)}/{self.case.unit}  "
            f"shortcut {_time(self.shortcut_s)}/{self.case.unit}  x{self.ratio:5.2f}  "
            f"won {self.wins}/{self.rounds} (p {self.p_value:.3f})  {self.case.where}"
        )


def _time(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:7.2f} ms"
    return f"{seconds * 1e6:7.2f} us"


def run_loop(operation: Callable[[], object]) -> Run:
    """A :data:`Run` calling ``operation`` ``n`` times (the loop costs both sides the same)."""

    def run(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            operation()
        return time.perf_counter() - started

    return run


def _calibrate(run: Run, budget_s: float) -> int:
    """Operations that make one ``run`` last about ``budget_s``."""
    n = 1
    while True:
        took = run(n)
        if took >= min(0.05, budget_s / 2) or n >= 10**8:
            return max(1, int(n * budget_s / max(took, 1e-9)))
        n *= 8


def measure(case: Case, *, seconds: float, rounds: int) -> Outcome:
    """``seconds`` split over ``rounds`` rounds of plain and shortcut, run back to back."""
    budget = seconds / (2 * rounds)
    n = min(_calibrate(case.plain, budget), _calibrate(case.shortcut, budget))  # (also the warm-up)
    ratios: list[float] = []
    plain: list[float] = []
    shortcut: list[float] = []
    for number in range(rounds):
        if number % 2 == 0:
            p, s = case.plain(n), case.shortcut(n)
        else:
            s, p = case.shortcut(n), case.plain(n)
        plain.append(p / n)
        shortcut.append(s / n)
        ratios.append(p / s)
    return Outcome(
        case, statistics.median(plain), statistics.median(shortcut), statistics.median(ratios),
        sum(r > 1 for r in ratios), rounds,
    )


def main() -> None:
    from bench import shortcut_cache, shortcut_cases, shortcut_io

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="per shortcut (both sides, all rounds)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", nargs="*", default=[], help="run the cases whose name contains one of these")
    args = parser.parse_args()

    def wanted(case: Case) -> bool:
        return not args.only or any(word in case.name for word in args.only)

    outcomes: list[Outcome] = []
    with contextlib.ExitStack() as stack:
        io_cases = stack.enter_context(shortcut_io.cases())
        cases = [*shortcut_cases.cases(), *io_cases, *shortcut_cache.cases(asyncio.get_event_loop())]
        for case in cases:
            if wanted(case):
                outcome = measure(case, seconds=args.seconds, rounds=args.rounds)
                outcomes.append(outcome)
                print(outcome.line(), flush=True)
    print("ratios: " + "  ".join(f"{o.case.name} x{o.ratio:.2f}" for o in outcomes))
    dropped = [o.case.name for o in outcomes if not o.kept]
    print("no measurable gain: " + (", ".join(dropped) if dropped else "none"))


if __name__ == "__main__":
    main()
