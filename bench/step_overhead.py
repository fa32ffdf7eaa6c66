"""Per-step overhead of a Dagster run: what a step costs before its own work starts.

Dagster's default (multiprocess) executor runs every step in a fresh Python process that imports the code
location (pipeline.definitions) and sets up its resources. This bench measures, for the current tree and for a
baseline revision checked out side by side in the same run (a git worktree; default: the commit before the
lazy-import change), with contenders interleaved and medians over `--repeat` rounds:
- `import pipeline.definitions` in a fresh interpreter (what every step process pays first);
- a whole one-step run, `dagster asset materialize --select user_sequences` on the bundled tiny MIND sample:
  process start, imports, run and event storage, resource set-up, a step whose own work is ~0.1 s.

Usage: python bench/step_overhead.py [--baseline REV] [--repeat 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BASELINE = "934e576"  # the last commit before torch & co. were imported lazily


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def prepare(tree: Path, work: Path) -> dict[str, str]:
    """A private instance, raw root and store for this tree, with the tiny sample ingested once."""
    env = {**os.environ, "DAGSTER_HOME": str(work / "home"), "SEMID_RAW_ROOT": str(work / "raw"),
           "SEMID_STORAGE_ROOT": str(work / "store"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": str(tree)}
    (work / "home").mkdir(parents=True, exist_ok=True)
    (work / "home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    py = sys.executable
    subprocess.run([py, "-m", "ops.sample", "--raw-root", str(work / "raw"), "--size", "tiny"], cwd=tree, env=env,
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([str(Path(py).parent / "dagster"), "asset", "materialize", "-m", "pipeline.definitions",
                    "--select", "items,interactions,quarantine", "--partition", "sample_mind"], cwd=tree, env=env,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision to compare against")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    py, dagster = sys.executable, str(Path(sys.executable).parent / "dagster")
    with tempfile.TemporaryDirectory(prefix="step-overhead-") as tmp:
        base_tree = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(base_tree), args.baseline], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            trees = {f"baseline ({args.baseline})": base_tree, "ours (working tree)": ROOT}
            envs = {name: prepare(tree, Path(tmp) / f"work{i}") for i, (name, tree) in enumerate(trees.items())}
            imports: dict[str, list[float]] = {n: [] for n in trees}
            steps: dict[str, list[float]] = {n: [] for n in trees}
            for _ in range(args.repeat):  # interleaved: both contenders see the same machine load
                for name, tree in trees.items():
                    imports[name].append(timed([py, "-c", "import pipeline.definitions"], tree, envs[name]))
                    steps[name].append(timed([dagster, "asset", "materialize", "-m", "pipeline.definitions",
                                              "--select", "user_sequences", "--partition", "sample_mind"],
                                             tree, envs[name]))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = next(iter(trees))
    print(f"median of {args.repeat} interleaved rounds, {os.cpu_count()} cores\n")
    print("| contender | import pipeline.definitions s | one-step run s (user_sequences) | import / baseline | "
          "run / baseline |")
    print("|---|---|---|---|---|")
    for name in trees:
        imp, run = statistics.median(imports[name]), statistics.median(steps[name])
        print(f"| {name} | {imp:.2f} | {run:.2f} | {imp / statistics.median(imports[base]):.2f} | "
              f"{run / statistics.median(steps[base]):.2f} |")


if __name__ == "__main__":
    main()
