"""The table of one sitting's DPO runs (docs/results.md, "Iterative DPO"): reference and policy
success, the gain, and each sampling round's pairs, from a folder of summary.json copies named
NAME-seedS.json.

    python3 scripts/sitting_table.py docs/results/sittings/2026-12-03-epyc
"""
import glob
import json
import sys
from pathlib import Path


def mean(xs):
    return sum(xs) / len(xs)


def main():
    runs = {}
    for path in sorted(glob.glob(str(Path(sys.argv[1]) / "*.json"))):
        name, seed = Path(path).stem.rsplit("-seed", 1)
        runs.setdefault(name, {})[seed] = json.loads(Path(path).read_text())
    print("| run | seeds | reference success % | policy success % | policy − reference "
          "| rounds of seed 1: pairs (sample success %) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, by_seed in runs.items():
        seeds = sorted(by_seed)
        ref = [100 * by_seed[s]["reference"]["success_rate"] for s in seeds]
        pol = [100 * by_seed[s]["policy"]["success_rate"] for s in seeds]
        gain = [p - r for p, r in zip(pol, ref)]
        cell = lambda xs, f: f"{mean(xs):{f}} ({', '.join(format(x, f) for x in xs)})"
        rounds = ", ".join(f"{r['pairs']} ({100 * r['mean_score']:.1f})"
                           for r in by_seed[seeds[0]]["policy_pairs"])
        print(f"| `{name}` | {','.join(seeds)} | {cell(ref, '.1f')} | {cell(pol, '.1f')} "
              f"| {cell(gain, '+.1f')} | {rounds} |")


if __name__ == "__main__":
    main()
