"""Timing helpers the benchmarks share: interleaved runs, medians, ratios, machine notes."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Command = tuple[list[str], Mapping[str, str] | None]


class BenchError(Exception):
    """A timed command failed or a tool is missing; the message says which."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def find_juncture() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "juncture")
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("juncture")
    if found:
        return found
    raise BenchError(f"juncture not found next to {sys.executable} nor on PATH", 2)


def run_checked(argv: list[str], env: Mapping[str, str] | None) -> float:
    """Wall time of one run of `argv` in seconds; raises BenchError unless it exits 0."""
    started = time.perf_counter()
    completed = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    elapsed = time.perf_counter() - started
    if completed.returncode != 0:
        again = subprocess.run(argv, capture_output=True, env=env)
        output = (again.stdout + again.stderr).decode("utf-8", "replace").strip()
        raise BenchError(
            f"`{' '.join(argv)}` exited with {completed.returncode}"
            + (f":\n{output[-2000:]}" if output else "")
        )
    return elapsed


def time_interleaved(commands: Mapping[str, Command], repetitions: int) -> dict[str, list[float]]:
    """Run every command `repetitions` times, rotating which goes first in each repetition.

    One untimed warm-up run each first (page cache, .pyc files), so the first timed tool is not penalised.
    """
    names = list(commands)
    for name in names:
        run_checked(*commands[name])
    samples: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repetitions):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(run_checked(*commands[name]))
    return samples


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_busy(interval: float = 0.5) -> float | None:
    """The fraction of CPU time not idle over `interval` seconds (Linux /proc/stat), or None."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(x) for x in handle.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(interval)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    total = total1 - total0
    return 1 - (idle1 - idle0) / total if total > 0 else None


def ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.2f}"


def ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def spread(samples: Sequence[float]) -> str:
    """min..max in ms, to show how noisy a median is."""
    return f"{min(samples) * 1000:.1f}..{max(samples) * 1000:.1f}"


def verdict(value: float | None, target: float, at_most: bool = True) -> str:
    """PASS or MISS against a target that is a ceiling (`at_most`) or a floor; n/a without a value."""
    if value is None:
        return "n/a"
    ok = value <= target if at_most else value >= target
    return "PASS" if ok else "MISS"


def num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def write_report(json_file: str, report: Mapping[str, Any]) -> None:
    """`--json FILE`: every figure of the run, as indented JSON."""
    with open(json_file, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")
    print(f"\nwrote {json_file}")


def run_main(
    name: str,
    description: str,
    quick_help: str,
    bench: Callable[[bool, str | None], int],
    argv: Sequence[str] | None,
) -> int:
    """The benchmarks' command line: `--quick`, `--json FILE`; a BenchError is one line and its exit code."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--json", metavar="FILE", help="also write every figure as JSON to FILE")
    args = parser.parse_args(argv)
    try:
        return bench(args.quick, args.json)
    except BenchError as exc:
        sys.stdout.flush()
        sys.stderr.write(f"{name}: error: {exc}\n")
        return exc.exit_code
