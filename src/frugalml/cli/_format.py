"""Rendering trial tables as rich tables, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import TYPE_CHECKING, Any, Sequence

from rich.console import Console

from frugalml import accounting
from frugalml.budgets import SERVING_METRICS
from frugalml.records import TrialRecord

if TYPE_CHECKING:
    from frugalml.results import ComputeAccount


def wide_console() -> Console:
    """A console at the terminal's width, or 160 columns when output is piped (rich would wrap at 80)."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def trial_rows(records: Sequence[TrialRecord]) -> list[dict[str, Any]]:
    """One flat row per trial: configuration, status, stop reason, key metrics, compute saved."""
    rows = []
    for record in records:
        summary = record.summary()
        rows.append(
            {
                "number": record.number,
                "trial_id": record.trial_id,
                "workload": record.workload,
                **{f"param_{k}": v for k, v in record.params.items()},
                "repeat": record.repeat,
                "status": record.status.value,
                "stop_rule": record.stop.rule if record.stop else None,
                "stop_reason": record.stop.message if record.stop else record.error,
                "stop_step": record.stop.step if record.stop else None,
                "stop_latency_ms": record.stop.latency_ms if record.stop else None,
                **summary,
                "steps_done": record.steps_done,
                "steps_planned": record.steps_planned,
                "cpu_s": record.cpu_s,
                "cpu_s_saved": accounting.saved_cpu_s(record),  # None: unknown
                "saved_basis": record.saved_basis,
                "stop_phase": record.stop_phase,
                "energy_j": record.energy_j,
                "energy_j_saved": record.energy_j_saved,
                "energy_source": record.energy_source,
                "wall_s": record.wall_s,
                **{metric: record.serving(metric) for metric in SERVING_METRICS},
            }
        )
    return rows


def _clean(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def to_json(data: Any) -> str:
    if isinstance(data, list):
        data = [{k: _clean(v) for k, v in row.items()} for row in data]
    return json.dumps(data, indent=2, default=str)


def to_csv(rows: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _cpu(seconds: float) -> str:
    """CPU-seconds to a tenth, or to two significant digits below one: a short study's 0.04 saved
    of 0.27 read '0.0 ... (15% of ...)'."""
    return f"{seconds:.1f}" if abs(seconds) >= 1 or seconds == 0 else f"{seconds:.2g}"


def compute_line(account: ComputeAccount) -> str:
    by_rule = ", ".join(f"{rule} {account.shown(rule, cpu)}" for rule, cpu in sorted(account.saved_by_rule.items()))
    energy = "" if account.used_energy_j is None else (
        f"; energy: used {account.used_energy_j:.1f} J, saved {account.saved_energy_j or 0.0:.1f} J "
        f"({', '.join(account.energy_sources)})"
    )
    basis = accounting.describe_mix(account.saved_basis)
    return (
        f"compute: used {_cpu(account.used_cpu_s)} CPU-s, saved {_cpu(account.saved_cpu_s)} CPU-s "
        f"({account.saved_fraction:.0%} of running every trial in full)" + (f" [{by_rule}]" if by_rule else "")
        + (f" (saved from: {basis})" if basis else "") + energy
    )
