"""``--server-args A B ...``: geventchat with each set of extra flags, side by side in one
invocation, so that the cost of a feature is a ratio measured in one run on one machine
(``--server-args "--history 0" "" "--db /tmp/x.db"``: history off, the defaults, SQLite).

Runs alternate between the flag sets (``--repeat`` rounds): load from others that drifts
during the invocation hits every set alike. Each figure is the median of its runs; the
ratios are each set's over the first set's.

A ``--db PATH`` must not exist before the invocation: lines kept by an earlier run would
be replayed to the benchmark's clients as they join. Between runs the bench removes the
database it made (and only that), so every run starts from an empty one.
"""

from __future__ import annotations

import argparse
import os
import shlex

from bench.runner import BenchError

DB_SUFFIXES = ("", "-wal", "-shm", ".lock")


def label(flags: str) -> str:
    return f"geventchat {flags}".rstrip() if flags.strip() else "geventchat (no extra flags)"


def db_paths(variants: list[str]) -> list[str]:
    paths = []
    for flags in variants:
        words = shlex.split(flags)
        for i, word in enumerate(words):
            if word == "--db" and i + 1 < len(words):
                paths.append(words[i + 1])
            elif word.startswith("--db="):
                paths.append(word[len("--db=") :])
    return paths


def _remove_databases(paths: list[str]) -> None:
    for path in paths:
        for suffix in DB_SUFFIXES:
            try:
                os.remove(path + suffix)
            except FileNotFoundError:
                pass


def run_variants(
    args: argparse.Namespace, variants: list[str], run_on, scenario_from, median, table, scaling, print_scaling
) -> tuple[list[dict], dict]:
    """Run each set of flags, alternating; (the median result of each, their ratios to the first)."""
    databases = db_paths(variants)
    existing = [path for path in databases if os.path.exists(path)]
    if existing:
        raise BenchError(f"--db {existing[0]} exists: give a new path (its kept lines would be replayed to the clients)")
    sc = scenario_from(args)
    print(f"scenario: {sc.describe()}, {sc.procs} generator processes, window {sc.auto_window()}", flush=True)
    runs: dict[str, list[dict]] = {flags: [] for flags in variants}
    try:
        for _ in range(max(1, args.repeat)):
            for flags in variants:
                one = argparse.Namespace(**{**vars(args), "server_args": [flags]})
                res = run_on("geventchat", scenario_from(args), one)
                res["server"] = label(flags)
                runs[flags].append(res)
                _remove_databases(databases)
    finally:
        _remove_databases(databases)
    results = []
    for flags in variants:
        best = median(label(flags), runs[flags])
        best["server"] = label(flags)
        best["server_args"] = flags
        results.append(best)
    print()
    print(table(results))
    ratios = scaling(results)
    for entry in ratios.values():
        entry.pop("bus_cost_us_per_message", None)  # no bus here: one process each
    print_scaling(ratios)
    return results, ratios
