"""Shared reporting: medians over interleaved runs, a Markdown table and a JSON file."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from pathlib import Path

import attrs


@attrs.define
class Measurement:
    """Samples of one metric (one value per run)."""

    group: str
    name: str
    unit: str
    samples: list[float] = attrs.field(factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def machine() -> str:
    """A one-line description of where the numbers were taken."""
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"{python}, {os.cpu_count()} CPUs, {platform.machine()}"


def table(measurements: list[Measurement], ratios: dict[str, tuple[str, str]]) -> str:
    """Markdown table of medians (min-max), plus ``ratio name -> (numerator, baseline)``."""
    by_name = {m.name: m for m in measurements}
    lines = [
        "| group | measurement | median | unit | min - max | runs |",
        "|---|---|---:|---|---|---:|",
    ]
    for m in measurements:
        lines.append(
            f"| {m.group} | {m.name} | **{m.median:,.1f}** | {m.unit} | "
            f"{min(m.samples):,.1f} - {max(m.samples):,.1f} | {len(m.samples)} |"
        )
    if ratios:
        lines += ["", "| ratio | value |", "|---|---:|"]
        for label, (numerator, baseline) in ratios.items():
            lines.append(
                f"| {label} | {by_name[numerator].median / by_name[baseline].median:.2f} |"
            )
    return "\n".join(lines)


def write_json(path: Path, measurements: list[Measurement]) -> None:
    """Store every sample, for later comparison."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "machine": machine(),
                "measurements": [attrs.asdict(m) | {"median": m.median} for m in measurements],
            },
            indent=2,
        )
    )


def progress(done: int, total: int, label: str) -> None:
    """Redraw a one-line progress bar on stderr."""
    width = 30
    filled = width * done // max(1, total)
    bar = "#" * filled + " " * (width - filled)
    print(f"\r  {label:<28} [{bar}] {done}/{total}", end="", file=sys.stderr, flush=True)
