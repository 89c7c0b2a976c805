"""Summarise a run's throughput: median tokens/s and MFU over its steady-state steps.

Usage: python benchmarks/train_throughput.py RUN [--skip 10]
(measure with e.g. `wsdlab train --preset 210M --steps 60 --set train.compile=true ...`, see benchmarks/README.md)
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--skip", type=int, default=10, help="first steps to drop (compile, warm-up)")
    args = ap.parse_args()
    rows = [json.loads(line) for line in (args.run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in rows if r.get("split") != "val" and r.get("tokens_per_s") and r["step"] > args.skip]
    tps = statistics.median(r["tokens_per_s"] for r in train)
    mfus = [r["mfu"] for r in train if r.get("mfu") is not None]
    out = {"run": str(args.run), "steps": len(train), "tokens_per_s": tps,
           "mfu": statistics.median(mfus) if mfus else None,
           "final_loss": train[-1]["loss"] if train else None}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
