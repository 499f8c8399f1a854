"""A yardstick for search benchmarks that cannot reward failing cheaply.

"CPU-s until the target was found", with a run that never finds it charged all of its CPU,
favours an arm that fails fast: a short run that never gets close costs less than a long
one that gets there. This module scores runs on a ladder of quality levels instead:

* per arm and level (within 1%, 3%, 5% of the best feasible loss seen), how many runs
  reach it, and the CPU-s each took to get there (the CPU of the trials that had finished
  by the one that reached it);
* the median over runs counts a run that never reaches the level as *never* (infinite), so
  the median is a number only when most runs reach the level;
* ``ratio to best peer`` is taken at one level: the tightest that most runs of both
  compared arms reach (the best peer being the peer with the lowest such median there).
  Levels where only one side gets there are printed as such, never turned into a ratio;
* the anytime view: the best feasible loss each arm had reached by fixed CPU budgets.

The data step (``ladder_info``, ``anytime_info``) returns plain tuples; the printing step
(``format_ladder``, ``format_anytime``) turns them into text.
"""

from __future__ import annotations

import math
import statistics
from typing import Iterable, NamedTuple, Protocol, Sequence

LEVELS = (0.01, 0.03, 0.05)
CPU_BUDGETS = (10.0, 20.0, 40.0, 80.0, 160.0)


class ScoredTrial(Protocol):
    finished_s: float
    cpu_s: float
    val_loss: float | None
    feasible: bool


class Reach(NamedTuple):
    """One run at one level."""

    reached: bool
    cpu_s: float  # to reach it; math.inf when it never did


class Rung(NamedTuple):
    """One arm at one level, over its runs."""

    level: float
    goal: float  # the loss to reach
    reaches: tuple[Reach, ...]

    @property
    def reached(self) -> int:
        return sum(r.reached for r in self.reaches)

    @property
    def most_reach(self) -> bool:
        return self.reached * 2 > len(self.reaches)

    @property
    def median_cpu_s(self) -> float:
        """Median over runs, a run that never reached the level counted as infinite."""
        return statistics.median(r.cpu_s for r in self.reaches) if self.reaches else math.inf

    @property
    def spread(self) -> tuple[float, float] | None:
        """Smallest and largest CPU-s of the runs that reached the level."""
        values = [r.cpu_s for r in self.reaches if r.reached]
        return (min(values), max(values)) if values else None


class Ratio(NamedTuple):
    level: float
    ours: Rung
    best_peer: str | None  # the peer with the lowest median at this level, if any reaches it in most runs
    peer: Rung | None
    value: float | None  # None unless both sides reach the level in most of their runs


class LadderInfo(NamedTuple):
    target: float
    levels: tuple[float, ...]
    arms: dict[str, tuple[Rung, ...]]
    ratios: tuple[Ratio, ...]  # ours against the best peer, per level
    headline: Ratio | None  # the tightest level both reach in most runs


def goal_for(target: float, level: float) -> float:
    """The loss within ``level`` of ``target`` (losses are minimised; a negative one too)."""
    return target * (1 + level) if target > 0 else target * (1 - level)


def reach(done: Iterable[ScoredTrial], goal: float) -> Reach:
    cpu = 0.0
    for trial in sorted(done, key=lambda t: t.finished_s):
        cpu += trial.cpu_s
        if trial.feasible and trial.val_loss is not None and trial.val_loss <= goal:
            return Reach(True, cpu)
    return Reach(False, math.inf)


def ladder_info(runs: dict[str, Sequence[Sequence[ScoredTrial]]], target: float, ours: str,
                peers: Sequence[str], levels: Sequence[float] = LEVELS) -> LadderInfo:
    arms = {arm: tuple(Rung(level, goal_for(target, level), tuple(reach(done, goal_for(target, level))
                                                                   for done in per_seed))
                       for level in levels)
            for arm, per_seed in runs.items()}
    ratios = []
    present = [p for p in peers if p in arms]
    if ours in arms and present:
        for i, level in enumerate(levels):
            mine = arms[ours][i]
            finite = [(arms[p][i].median_cpu_s, p) for p in present if arms[p][i].most_reach]
            best = min(finite)[1] if finite else None
            theirs = arms[best][i] if best else None
            value = (mine.median_cpu_s / max(theirs.median_cpu_s, 1e-9)
                     if theirs is not None and mine.most_reach else None)
            ratios.append(Ratio(level, mine, best, theirs, value))
    headline = next((r for r in ratios if r.value is not None), None)
    return LadderInfo(target, tuple(levels), arms, tuple(ratios), headline)


def _cell(rung: Rung) -> str:
    counts = f"{rung.reached}/{len(rung.reaches)}"
    if not rung.most_reach:
        spread = rung.spread
        return f"{counts} never" + (f" ({spread[0]:.0f}-{spread[1]:.0f})" if spread else "")
    low, high = rung.spread
    return f"{counts} {rung.median_cpu_s:.1f} ({low:.0f}-{high:.0f})"


def format_ladder(info: LadderInfo, ours: str) -> list[str]:
    levels = info.levels
    lines = [f"quality ladder: target = best feasible val_loss of any arm in any run, {info.target:.5g}",
             "  cell: runs that reach the level / runs, median CPU-s to reach it (a run that never does counts",
             "  as never, so 'never' when most runs do not), (fastest-slowest run that did)"]
    titles = [f"within {level:.0%} ({goal_for(info.target, level):.4g})" for level in levels]
    lines.append(f"  {'arm':<19}" + "".join(f"{title:>27}" for title in titles))
    for arm, rungs in info.arms.items():
        lines.append(f"  {arm:<19}" + "".join(f"{_cell(r):>27}" for r in rungs))
    for ratio in info.ratios:
        at = f"within {ratio.level:.0%}"
        if ratio.value is not None:
            lines.append(f"  {ours} / best peer ({ratio.best_peer}) {at}: {ratio.value:.2f}")
        elif ratio.best_peer is None and ratio.ours.most_reach:
            lines.append(f"  {at}: {ours} reaches it in {ratio.ours.reached}/{len(ratio.ours.reaches)} runs, "
                         "no peer in most of its runs (no ratio)")
        elif ratio.best_peer is None:
            lines.append(f"  {at}: neither {ours} nor any peer reaches it in most runs (no ratio)")
        else:
            lines.append(f"  {at}: {ratio.best_peer} reaches it in {ratio.peer.reached}/{len(ratio.peer.reaches)} "
                         f"runs, {ours} only in {ratio.ours.reached}/{len(ratio.ours.reaches)} (no ratio: "
                         f"{ours} loses at this level)")
    if info.headline is None:
        lines.append("ratio to best peer: none (no level that most runs of both reach)")
    else:
        h = info.headline
        lines.append(f"ratio to best peer: {h.value:.2f} at within {h.level:.0%} (the tightest level most runs of "
                     f"both reach: {ours} {h.ours.reached}/{len(h.ours.reaches)}, best peer {h.best_peer} "
                     f"{h.peer.reached}/{len(h.peer.reaches)})")
    return lines


class Anytime(NamedTuple):
    budgets: tuple[float, ...]
    arms: dict[str, tuple[float, ...]]  # median over runs of the best feasible loss by each CPU budget


def best_by(done: Iterable[ScoredTrial], cpu_budget: float) -> float:
    """The best feasible loss among the trials finished before ``cpu_budget`` CPU-s were spent."""
    cpu, best = 0.0, math.inf
    for trial in sorted(done, key=lambda t: t.finished_s):
        cpu += trial.cpu_s
        if cpu > cpu_budget:
            break
        if trial.feasible and trial.val_loss is not None:
            best = min(best, trial.val_loss)
    return best


def anytime_info(runs: dict[str, Sequence[Sequence[ScoredTrial]]],
                 budgets: Sequence[float] = CPU_BUDGETS) -> Anytime:
    return Anytime(tuple(budgets), {arm: tuple(statistics.median(best_by(done, b) for done in per_seed)
                                               for b in budgets)
                                    for arm, per_seed in runs.items()})


def format_anytime(info: Anytime, target: float) -> list[str]:
    lines = ["anytime: median over runs of the best feasible val_loss reached within a CPU budget "
             "(% above the target; '-' = none yet in most runs)",
             f"  {'arm':<19}" + "".join(f"{f'{b:g} CPU-s':>16}" for b in info.budgets)]
    for arm, values in info.arms.items():
        lines.append(f"  {arm:<19}" + "".join(f"{_above(v, target):>16}" for v in values))
    return lines


def _above(value: float, target: float) -> str:
    if not math.isfinite(value):
        return "-"
    share = value / target - 1
    return f"{value:.4g} ({'>+999%' if share > 9.99 else format(share, '+.0%')})"


def anytime_chart(runs: dict[str, Sequence[Sequence[ScoredTrial]]], target: float, path: str, title: str,
                  ours: str) -> None:
    """The anytime curve as a picture at ``path`` (PNG or SVG by its suffix): per arm, the median over
    runs of the best feasible loss reached within each CPU budget, as % above ``target``, with the
    runs' interquartile range shaded; a run with no feasible trial yet counts as worse than any, so
    a line starts where most runs have one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    most = max((sum(t.cpu_s for t in done) for per_seed in runs.values() for done in per_seed), default=1.0)
    budgets = np.geomspace(1.0, max(2.0, most), 60)
    figure, axes = plt.subplots(figsize=(7.5, 4.2), dpi=120)
    for arm, per_seed in runs.items():
        above = np.array([[best_by(done, b) / target - 1 for b in budgets] for done in per_seed]) * 100
        low, median, high = np.percentile(above, [25, 50, 75], axis=0, method="lower")  # inf stays inf
        shown = np.isfinite(median)
        style = {"linewidth": 2.4, "color": "black", "zorder": 3} if arm == ours else {"linewidth": 1.2}
        line, = axes.plot(budgets[shown], median[shown], label=f"{arm} ({len(per_seed)} runs)", **style)
        band = np.isfinite(low) & np.isfinite(high)
        axes.fill_between(budgets[band], low[band], high[band], color=line.get_color(),
                          alpha=0.15 if arm == ours else 0.07, linewidth=0)
    for level in LEVELS:
        axes.axhline(level * 100, color="0.6", linewidth=0.8, linestyle=":")
    axes.set_xscale("log")
    axes.set_yscale("symlog", linthresh=1.0)
    axes.set_ylim(0, None)
    axes.set_xlabel("CPU-seconds spent (each arm's trials, in the order they finished)")
    axes.set_ylabel(f"best feasible val_loss, % above {target:.5g}")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8, frameon=False)
    axes.grid(True, which="major", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
