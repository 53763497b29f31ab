"""Benchmark: `juncture fire` against Debian's `run-parts` on the same hook directories.

One run measures, with medians of interleaved repetitions:

* the wall time of `run-parts DIR`, `juncture -C PROJECT fire bench` and `python3 -c pass` for 0, 100
  and 1000 trivial `#!/bin/sh` hooks, giving the per-hook cost of each runner and juncture's fixed cost
  relative to a bare interpreter start;
* 100 hooks that each start a Python interpreter, run by `run-parts` (one at a time) and by juncture with
  `parallel: 2`, giving the speed-up of the parallel event.

It is a measurement, not a test: it prints PASS/MISS next to each target and exits 0 (2 when run-parts
or juncture cannot be found, 1 when a timed command fails).

    python bench/hooks_vs_runparts.py [--quick] [--json FILE]
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from timing import (
    BenchError,
    Command,
    cpu_busy,
    find_juncture,
    ms,
    num,
    ratio,
    run_main,
    spread,
    time_interleaved,
    usable_cpus,
    verdict,
    write_report,
)

COUNTS = (0, 100, 1000)
REPETITIONS = {0: 15, 100: 9, 1000: 5}
PAR_HOOKS = 100
PAR_REPETITIONS = 5

TRIVIAL_HOOK = "#!/bin/sh\nexit 0\n"
PYTHON_HOOK = '#!/bin/sh\nexec "$PYTHON" -c pass\n'
BENCH_CONFIG = "app: bench\nhooks_path: hooks\n"
PAR_CONFIG = "app: bench\nhooks_path: hooks\nevents:\n  par:\n    parallel: 2\n"

TARGET_PER_HOOK_RATIO = 1.10  # juncture / run-parts per-hook cost at N=1000: at most
TARGET_FIXED_RATIO = 10.0  # juncture (N=0) / python3 -c pass: at most
TARGET_PAR_SPEEDUP = 1.5  # run-parts / juncture (parallel: 2) on 100 Python hooks: at least

RUN_PARTS = "run-parts"
JUNCTURE = "juncture"
PYTHON = "python3 -c pass"
TOOLS = (RUN_PARTS, JUNCTURE, PYTHON)


# -- finding the tools --------------------------------------------------------------------------------


def find_run_parts() -> str:
    for candidate in ("/usr/bin/run-parts", shutil.which("run-parts")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise BenchError("run-parts not found (Debian's debianutils provides /usr/bin/run-parts)", 2)


# -- building the projects ----------------------------------------------------------------------------


def make_project(root: str, name: str, config: str, event: str, hooks: int, body: str) -> str:
    """A project directory `root/name` with `juncture.yaml` and `hooks/<event>.d/` of `hooks` files."""
    project = os.path.join(root, name)
    directory = os.path.join(project, "hooks", f"{event}.d")
    os.makedirs(directory)
    with open(os.path.join(project, "juncture.yaml"), "w", encoding="utf-8") as handle:
        handle.write(config)
    for i in range(1, hooks + 1):
        path = os.path.join(directory, f"h{i:04d}")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(body)
        os.chmod(path, 0o755)
    return project


# -- running and timing -------------------------------------------------------------------------------


def check_hook_count(run_parts: str, juncture: str, project: str, event: str, expected: int) -> None:
    """Both tools must see exactly the hooks we made, or the timings compare nothing."""
    directory = os.path.join(project, "hooks", f"{event}.d")
    listed = subprocess.run([run_parts, "--test", directory], capture_output=True, text=True, check=False)
    seen = len(listed.stdout.split())
    if listed.returncode != 0 or seen != expected:
        raise BenchError(f"run-parts --test {directory}: {seen} hook(s), expected {expected}")
    planned = subprocess.run(
        [juncture, "-C", project, "fire", event, "--dry-run", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        hooks = len(json.loads(planned.stdout)["hooks"])
    except (ValueError, KeyError, TypeError):
        raise BenchError(
            f"juncture fire {event} --dry-run --json in {project}: unexpected output "
            f"(exit {planned.returncode}): {(planned.stdout + planned.stderr).strip()[-2000:]}"
        ) from None
    if hooks != expected:
        raise BenchError(f"juncture plans {hooks} hook(s) for {event} in {project}, expected {expected}")


def environment_notes(cpus: int) -> list[str]:
    """Facts about this machine that move the figures, printed with them."""
    notes = []
    spec = importlib.util.find_spec("juncture")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if (
        os.environ.get("PYTHONDONTWRITEBYTECODE")
        and locations
        and not os.path.isdir(os.path.join(locations[0], "__pycache__"))
    ):
        notes.append(
            f"PYTHONDONTWRITEBYTECODE is set and {locations[0]} has no __pycache__: every juncture run "
            "compiles its own modules from source, which inflates its fixed cost"
        )
    busy = cpu_busy()
    if busy is not None and busy > 0.2:
        notes.append(
            f"the CPUs were {busy:.0%} busy just before the run: other processes add noise to every figure"
        )
    if cpus < 3:
        notes.append(
            f"only {cpus} usable CPU(s): hooks that start Python are CPU-bound, so parallel: 2 shares "
            "them with juncture itself and cannot reach a 2x speed-up"
        )
    return notes


# -- the report ---------------------------------------------------------------------------------------


def reps_for(count: int, quick: bool) -> int:
    return max(3, count // 3) if quick else count


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(
        "hooks_vs_runparts",
        "Time juncture fire against run-parts (medians).",
        "a third of the repetitions (at least 3)",
        bench,
        argv,
    )


def bench(quick: bool, json_file: str | None) -> int:
    run_parts = find_run_parts()
    juncture = find_juncture()
    python = sys.executable
    root = tempfile.mkdtemp(prefix="juncture-bench-")
    try:
        return measure(run_parts, juncture, python, root, quick, json_file)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def measure(run_parts: str, juncture: str, python: str, root: str, quick: bool, json_file: str | None) -> int:
    print(f"run-parts: {run_parts}")
    print(f"juncture:  {juncture}")
    print(f"python:    {python} ({platform.python_version()})")
    cpus = usable_cpus()
    load = os.getloadavg()[0]
    print(
        f"machine:   {platform.platform()}, {cpus} usable CPU(s), load average {load:.2f}"
        f"{', --quick' if quick else ''}"
    )
    notes = environment_notes(cpus)
    for note in notes:
        print(f"note:      {note}")
    print()

    # -- case 1: trivial hooks, N = 0, 100, 1000 --
    samples: dict[int, dict[str, list[float]]] = {}
    medians: dict[int, dict[str, float]] = {}
    for count in COUNTS:
        project = make_project(root, f"n{count}", BENCH_CONFIG, "bench", count, TRIVIAL_HOOK)
        check_hook_count(run_parts, juncture, project, "bench", count)
        commands: dict[str, Command] = {
            RUN_PARTS: ([run_parts, os.path.join(project, "hooks", "bench.d")], None),
            JUNCTURE: ([juncture, "-C", project, "fire", "bench"], None),
            PYTHON: ([python, "-c", "pass"], None),
        }
        samples[count] = time_interleaved(commands, reps_for(REPETITIONS[count], quick))
        medians[count] = {tool: statistics.median(values) for tool, values in samples[count].items()}

    print("Median wall time in ms (min..max in brackets), trivial `#!/bin/sh` hooks")
    header = f"{'tool':<16}" + "".join(f"{f'N={n} ({len(samples[n][JUNCTURE])} reps)':>28}" for n in COUNTS)
    print(header)
    print("-" * len(header))
    for tool in TOOLS:
        cells = "".join(f"{f'{ms(medians[n][tool])} [{spread(samples[n][tool])}]':>28}" for n in COUNTS)
        print(f"{tool:<16}{cells}")
    print()

    top = COUNTS[-1]
    per_hook = {tool: (medians[top][tool] - medians[0][tool]) / top for tool in (RUN_PARTS, JUNCTURE)}
    per_hook_ratio = ratio(per_hook[JUNCTURE], per_hook[RUN_PARTS])
    # `python3 -c pass` does not depend on N: the median of all its runs is a steadier denominator.
    python_runs = [t for n in COUNTS for t in samples[n][PYTHON]]
    python_median = statistics.median(python_runs)
    fixed_ratio = ratio(medians[0][JUNCTURE], python_median)
    print(f"Per-hook cost at N={top}, (T({top}) - T(0)) / {top}:")
    print(f"  run-parts {ms(per_hook[RUN_PARTS])} ms, juncture {ms(per_hook[JUNCTURE])} ms")
    print(
        f"  ratio juncture/run-parts: {num(per_hook_ratio)}"
        f"   target <= {TARGET_PER_HOOK_RATIO:.2f}  {verdict(per_hook_ratio, TARGET_PER_HOOK_RATIO, True)}"
    )
    print(
        f"Fixed cost, T_juncture(N=0) / T(python3 -c pass, median of all {len(python_runs)} runs): "
        f"{ms(medians[0][JUNCTURE])} / {ms(python_median)} ms = {num(fixed_ratio)}"
        f"   target <= {TARGET_FIXED_RATIO:g}  {verdict(fixed_ratio, TARGET_FIXED_RATIO, True)}"
    )
    print()

    # -- case 2: 100 hooks that each start Python, juncture with parallel: 2 --
    project = make_project(root, "par", PAR_CONFIG, "par", PAR_HOOKS, PYTHON_HOOK)
    env = os.environ | {"PYTHON": python}
    check_hook_count(run_parts, juncture, project, "par", PAR_HOOKS)
    par_commands: dict[str, Command] = {
        RUN_PARTS: ([run_parts, os.path.join(project, "hooks", "par.d")], env),
        JUNCTURE: ([juncture, "-C", project, "fire", "par"], env),
    }
    par_samples = time_interleaved(par_commands, reps_for(PAR_REPETITIONS, quick))
    par_medians = {tool: statistics.median(values) for tool, values in par_samples.items()}
    speedup = ratio(par_medians[RUN_PARTS], par_medians[JUNCTURE])
    print(
        f"{PAR_HOOKS} hooks running `python -c pass`, juncture with parallel: 2 "
        f"(median of {len(par_samples[JUNCTURE])} reps, ms):"
    )
    for tool in (RUN_PARTS, JUNCTURE):
        print(f"  {tool:<10} {ms(par_medians[tool]):>9} [{spread(par_samples[tool])}]")
    print(
        f"  speed-up run-parts/juncture: {num(speedup)}"
        f"   target >= {TARGET_PAR_SPEEDUP:g}  {verdict(speedup, TARGET_PAR_SPEEDUP, False)}"
    )

    if json_file:
        report: dict[str, Any] = {
            "tools": {"run-parts": run_parts, "juncture": juncture, "python": python},
            "python_version": platform.python_version(),
            "platform": platform.platform(),
            "usable_cpus": cpus,
            "load_average_at_start": load,
            "notes": notes,
            "quick": quick,
            "unit": "seconds",
            "trivial": {
                str(n): {
                    "samples": samples[n],
                    "median": medians[n],
                    "repetitions": len(samples[n][JUNCTURE]),
                }
                for n in COUNTS
            },
            "per_hook": {**per_hook, "n": top},
            "python_pass_median": python_median,
            "parallel": {
                "hooks": PAR_HOOKS,
                "parallel": 2,
                "samples": par_samples,
                "median": par_medians,
                "repetitions": len(par_samples[JUNCTURE]),
            },
            "targets": {
                "per_hook_ratio": _target(per_hook_ratio, TARGET_PER_HOOK_RATIO, "<="),
                "fixed_cost_ratio": _target(fixed_ratio, TARGET_FIXED_RATIO, "<="),
                "parallel_speedup": _target(speedup, TARGET_PAR_SPEEDUP, ">="),
            },
        }
        write_report(json_file, report)
    return 0


def _target(value: float | None, target: float, op: str) -> dict[str, Any]:
    return {"value": value, "target": f"{op} {target:g}", "verdict": verdict(value, target, op == "<=")}


if __name__ == "__main__":
    sys.exit(main())
