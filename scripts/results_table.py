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
    if all(v != v for v in values):  # NaN: the runs do not have this value
        return "–"
    values = [v * scale for v in values]
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    listed = ", ".join(f"{v:.{digits}f}" for v in values)
    return f"{mean:.{digits}f} ({min(values):.{digits}f}..{max(values):.{digits}f}; {listed})"


def wins(pairs):
    """Share of held-out pairs whose chosen response gets the higher implicit reward."""
    return pairs["wins"] / max(pairs["wins"] + pairs["ties"] + pairs["losses"], 1)


def table(groups, prefix, columns, order=None, skip=None):
    """A markdown table of the groups named `prefix...` (less those `skip` names): one row per
    group with its name, its seed count, one cell per (header, value-of-a-summary, scale)
    column, and its command."""
    headers = ["run", "seeds"] + [header for header, _, _ in columns] + ["command"]
    rows = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    for group, runs in sorted(groups.items(), key=order or (lambda g: g[0])):
        if not group.startswith(prefix) or (skip and skip(group)):
            continue
        summaries = [s for _, s, _ in runs]
        cells = [cell([value(s) for s in summaries], scale) for _, value, scale in columns]
        row = [group.removeprefix(prefix), str(len(runs))] + cells + [f"`{runs[0][2]}`"]
        rows.append("| " + " | ".join(row) + " |")
    return "\n".join(rows)


GENERATIONS = [
    ("reference success %", lambda s: s["reference"]["success_rate"], 100),
    ("policy success %", lambda s: s["policy"]["success_rate"], 100),
    ("reference length", lambda s: s["reference"]["mean_length"], 1),
    ("policy length", lambda s: s["policy"]["mean_length"], 1),
    ("held-out pair wins %", lambda s: wins(s["held_out"]), 100),
]


def weaker_reference(group):
    return "-sft600" in group


def dpo_table(groups):
    # The default recipe's rows first, then the variations (runs named with a changed flag).
    def variation(group):
        return any(marker in group for marker in ("-lr", "-rpo", "-beta"))

    return table(groups, "dpo-", GENERATIONS, order=lambda g: (variation(g[0]), g[0]),
                 skip=weaker_reference)


def on_policy_table(groups):
    """The weaker reference's rows: offline pairs, then on-policy pairs."""
    def first_round(summary):
        # One report per round since iterative DPO; a single one before.
        reports = summary.get("policy_pairs") or {}
        return reports[0] if isinstance(reports, list) else reports

    def sampled(field):
        return lambda s: first_round(s).get(field, float("nan"))

    return table(groups, "dpo-", GENERATIONS + [
        ("on-policy pairs", sampled("pairs"), 1),
        ("sample success %", sampled("mean_score"), 100),
    ], skip=lambda g: not weaker_reference(g))


def best_of_n_table(groups):
    def rate(field):
        return lambda s: s["best_of_n"][field]

    return table(groups, "bestofn-", [
        ("held-out pair accuracy %", lambda s: wins(s["after"]), 100),
        ("reward model's pick %", rate("reward_model"), 100),
        ("random pick %", rate("random"), 100),
        ("oracle %", rate("oracle"), 100),
    ])


def reward_table(groups):
    return table(groups, "reward-", [
        ("held-out accuracy %", lambda s: wins(s["after"]), 100),
        ("near misses %", lambda s: s["after"]["hard_accuracy"], 100),
        ("obvious errors %", lambda s: s["after"]["easy_accuracy"], 100),
        ("before training %", lambda s: wins(s["before"]), 100),
    ])


def tables(folder):
    groups = load(folder)
    return "\n".join([
        "<!-- written by scripts/results_table.py from docs/results/runs/ -->",
        "### DPO trainer: held-out greedy generations (128 prompts per seed)",
        "",
        dpo_table(groups),
        "",
        "### DPO trainer from a weaker reference (600 supervised steps): offline and on-policy pairs",
        "",
        on_policy_table(groups),
        "",
        "### Reward trainer: held-out pairwise accuracy (ties count as errors)",
        "",
        reward_table(groups),
        "",
        "### Reward trainer: best-of-8 on 128 held-out prompts (samples of the seed's "
        "`dpo-dpo-sft600` policy)",
        "",
        best_of_n_table(groups),
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
