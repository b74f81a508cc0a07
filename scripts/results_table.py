"""Builds docs/results.md's tables from the run summaries scripts/results.sh saved.

Usage: python3 scripts/results_table.py docs/results/runs > docs/results/tables.md

Runs that differ only in `--seed` form one row: the mean over seeds, with the spread
(min..max) beside it and every seed's value listed.
"""

import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def load(folder):
    groups = defaultdict(list)
    for path in sorted(Path(folder).glob("*.json")):
        match = re.fullmatch(r"(.*)-seed(\d+)", path.stem)
        group, seed = match.group(1), int(match.group(2))
        command = path.with_suffix(".cmd").read_text().strip()
        command = re.sub(r" --seed \d+", " --seed S", command)
        groups[group].append((seed, json.loads(path.read_text()), command))
    return groups


def cell(values, scale=1.0, digits=1):
    values = [v * scale for v in values]
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    listed = ", ".join(f"{v:.{digits}f}" for v in values)
    return f"{mean:.{digits}f} ({min(values):.{digits}f}..{max(values):.{digits}f}; {listed})"


def dpo_table(groups):
    rows = [
        "| run | seeds | reference success % | policy success % | reference length | policy length | command |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for group, runs in groups.items():
        if not group.startswith("dpo-"):
            continue
        summaries = [s for _, s, _ in runs]
        rows.append(
            "| {} | {} | {} | {} | {} | {} | `{}` |".format(
                group.removeprefix("dpo-"),
                len(runs),
                cell([s["reference"]["success_rate"] for s in summaries], 100),
                cell([s["policy"]["success_rate"] for s in summaries], 100),
                cell([s["reference"]["mean_length"] for s in summaries]),
                cell([s["policy"]["mean_length"] for s in summaries]),
                runs[0][2],
            )
        )
    return "\n".join(rows)


def reward_table(groups):
    rows = [
        "| run | seeds | held-out accuracy % | near misses % | obvious errors % | before training % | command |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    def accuracy(a):
        total = max(a["wins"] + a["ties"] + a["losses"], 1)
        return a["wins"] / total

    for group, runs in groups.items():
        if not group.startswith("reward-"):
            continue
        summaries = [s for _, s, _ in runs]
        rows.append(
            "| {} | {} | {} | {} | {} | {} | `{}` |".format(
                group.removeprefix("reward-"),
                len(runs),
                cell([accuracy(s["after"]) for s in summaries], 100),
                cell([s["after"]["hard_accuracy"] for s in summaries], 100),
                cell([s["after"]["easy_accuracy"] for s in summaries], 100),
                cell([accuracy(s["before"]) for s in summaries], 100),
                runs[0][2],
            )
        )
    return "\n".join(rows)


def main():
    groups = load(sys.argv[1])
    print("<!-- written by scripts/results_table.py from docs/results/runs/ -->")
    print("### DPO trainer: held-out greedy generations (128 prompts per seed)\n")
    print(dpo_table(groups))
    print("\n### Reward trainer: held-out pairwise accuracy (ties count as errors)\n")
    print(reward_table(groups))


if __name__ == "__main__":
    main()
