"""Builds docs/results.md's tables from the run summaries scripts/results.sh saved.

Usage: python3 scripts/results_table.py docs/results/runs docs/results.md

The tables replace what lies between the `<!-- tables -->` and `<!-- /tables -->` lines of the
document; the text around them is left as it is.

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


def wins(pairs):
    """Share of held-out pairs whose chosen response gets the higher implicit reward."""
    return pairs["wins"] / max(pairs["wins"] + pairs["ties"] + pairs["losses"], 1)


def dpo_table(groups):
    rows = [
        "| run | seeds | reference success % | policy success % | reference length | policy length | held-out pair wins % | command |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    # The default recipe's rows first, then the variations (runs named with a changed flag).
    def variation(group):
        return any(marker in group for marker in ("-lr", "-rpo", "-beta"))

    for group, runs in sorted(groups.items(), key=lambda g: (variation(g[0]), g[0])):
        if not group.startswith("dpo-"):
            continue
        summaries = [s for _, s, _ in runs]
        rows.append(
            "| {} | {} | {} | {} | {} | {} | {} | `{}` |".format(
                group.removeprefix("dpo-"),
                len(runs),
                cell([s["reference"]["success_rate"] for s in summaries], 100),
                cell([s["policy"]["success_rate"] for s in summaries], 100),
                cell([s["reference"]["mean_length"] for s in summaries]),
                cell([s["policy"]["mean_length"] for s in summaries]),
                cell([wins(s["held_out"]) for s in summaries], 100),
                runs[0][2],
            )
        )
    return "\n".join(rows)


def reward_table(groups):
    rows = [
        "| run | seeds | held-out accuracy % | near misses % | obvious errors % | before training % | command |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    for group, runs in groups.items():
        if not group.startswith("reward-"):
            continue
        summaries = [s for _, s, _ in runs]
        rows.append(
            "| {} | {} | {} | {} | {} | {} | `{}` |".format(
                group.removeprefix("reward-"),
                len(runs),
                cell([wins(s["after"]) for s in summaries], 100),
                cell([s["after"]["hard_accuracy"] for s in summaries], 100),
                cell([s["after"]["easy_accuracy"] for s in summaries], 100),
                cell([wins(s["before"]) for s in summaries], 100),
                runs[0][2],
            )
        )
    return "\n".join(rows)


def tables(folder):
    groups = load(folder)
    return "\n".join([
        "<!-- written by scripts/results_table.py from docs/results/runs/ -->",
        "### DPO trainer: held-out greedy generations (128 prompts per seed)",
        "",
        dpo_table(groups),
        "",
        "### Reward trainer: held-out pairwise accuracy (ties count as errors)",
        "",
        reward_table(groups),
    ])


def main():
    folder, document = sys.argv[1], Path(sys.argv[2])
    text = document.read_text()
    start, end = "<!-- tables -->\n", "<!-- /tables -->"
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    document.write_text(before + start + tables(folder) + "\n" + end + after)


if __name__ == "__main__":
    main()
