"""How much of a generator's figures is the choice of samples: the same evaluation on
disjoint blocks of sample seeds.

    python bench/bench_seed_blocks.py [--model models/pretrained/dcgan-mnist.onnx]
        [--blocks 5] [--num-samples 1000] [--json FILE]

`dcgan evaluate` (and the card) draws its samples from the seeds 0..N-1, so that two
evaluations of one model agree. This measures the same FD ratios, precision and recall,
in both feature networks and against the same held-out digits and floors, for the seed
blocks 0..N-1, N..2N-1, ... and prints each block, then the mean, standard deviation
and range over the blocks: the spread a figure of one block carries, and whether the
fixed block is a typical one. It is `dcgan evaluate`'s own measurement (the Evaluator),
with the first sample seed moved; a class-conditional model's labels come from its
seeds as there.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models import generation as gen  # noqa: E402

FIGURES = ("fd_ratio", "fd2_ratio", "precision", "precision2", "recall", "recall2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(gen.BUNDLED))
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from training.evaluate.evaluator import evaluator_for
    from training.evaluate.sources import open_for_evaluation

    source, _ = open_for_evaluation(args.model)
    evaluator = evaluator_for(source.card, num_samples=args.num_samples, metrics=["fd", "prdc"])
    floor, count = evaluator.floor, evaluator.num_samples
    rows = []
    for block in range(args.blocks):
        figures = evaluator(source, only=("fd", "prdc"), first_seed=block * count)
        row = {"seeds": f"{block * count}-{(block + 1) * count - 1}",
               **{key: figures[key] for key in FIGURES}}
        rows.append(row)
        print(f"# seeds {row['seeds']}: " + ", ".join(f"{k} {row[k]:.3f}" for k in FIGURES),
              file=sys.stderr, flush=True)
    summary = {key: {"mean": statistics.fmean(r[key] for r in rows),
                     "sd": statistics.stdev(r[key] for r in rows) if len(rows) > 1 else 0.0,
                     "min": min(r[key] for r in rows), "max": max(r[key] for r in rows)}
               for key in FIGURES}
    floors = {key: floor[key] for key in FIGURES[2:]}
    print(f"<!-- {' '.join(sys.argv)} -->")
    print("| seeds | FD ratio 1 | FD ratio 2 | precision 1 | precision 2 | recall 1 | recall 2 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['seeds']} | " + " | ".join(f"{row[k]:.3f}" for k in FIGURES) + " |")
    print("| mean ± sd | " + " | ".join(f"{summary[k]['mean']:.3f} ± {summary[k]['sd']:.3f}"
                                         for k in FIGURES) + " |")
    print("| real vs real | 1 | 1 | " + " | ".join(f"{floors[k]:.3f}" for k in FIGURES[2:]) + " |")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "num_samples": count, "blocks": rows,
                                         "summary": summary, "floors": floors}, indent=1) + "\n")


if __name__ == "__main__":
    main()
