"""One line per figure: what was measured, against which baseline from the same run, the ratio
and the target, so that `benchmarks/throughput.py` can print every benchmark in one table.

A benchmark script exposes `figures(argv) -> list[Figure]` (measuring, printing its own detail
as it goes) beside its `main()`. `higher_is_better` says which way the target points: a rate
against a baseline rate wants a ratio at least `target`; a latency against a baseline latency
wants at most `target`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    name: str
    measured: str
    baseline: str
    ratio: float
    target: float | None = None
    higher_is_better: bool = True

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target

    def line(self) -> str:
        sign = ">=" if self.higher_is_better else "<="
        goal = "" if self.target is None else f"  target {sign} {self.target:g}"
        verdict = {None: "", True: "  met", False: "  NOT met"}[self.met]
        return (f"{self.name:34} {self.ratio:7.2f}{goal}{verdict}\n"
                f"{'':34} {self.measured} / {self.baseline}")


def print_table(figures: list[Figure]) -> None:
    for figure in figures:
        print(figure.line())
