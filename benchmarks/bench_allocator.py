"""The glibc allocator tuning (`wsdlab.common.allocator`) against glibc's defaults, on the default study's base run.

Both sides train the same run (the default study's base spec, first `--steps` steps, one thread) with
`wsdlab train` in a child process, alternating `WSDLAB_MALLOC=1` and `WSDLAB_MALLOC=0`: the setting is
made once per process at start-up, so the peer cannot share our process. Printed per side: best wall
time, the child's user and system CPU time and its minor page faults, and the ratios.

Usage: python benchmarks/bench_allocator.py [--steps 30] [--repeats 2]
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from wsdlab.study.cooldown import base_run_spec
from wsdlab.study.spec import find_study, load_study
from wsdlab.train.spec_io import write_spec


def run_once(spec: Path, out: Path, tuned: bool) -> dict[str, float]:
    env = {**os.environ, "WSDLAB_MALLOC": "1" if tuned else "0", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "wsdlab", "train", "--config", str(spec), "--out", str(out)], env=env,
                   check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall": wall, "user": after.ru_utime - before.ru_utime, "sys": after.ru_stime - before.ru_stime,
            "faults": after.ru_minflt - before.ru_minflt}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    study = load_study(find_study("default"))
    spec = base_run_spec(study)
    spec = spec.model_copy(update={"train": spec.train.model_copy(update={"steps": args.steps})})
    best = {True: {k: math.inf for k in ("wall", "user", "sys", "faults")},
            False: {k: math.inf for k in ("wall", "user", "sys", "faults")}}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.yaml"
        write_spec(spec, path)
        for i in range(args.repeats):
            for tuned in (False, True):
                got = run_once(path, Path(tmp) / f"run-{i}-{tuned}", tuned)
                best[tuned] = {k: min(best[tuned][k], v) for k, v in got.items()}
    for tuned, name in ((False, "glibc defaults"), (True, "wsdlab tuning")):
        b = best[tuned]
        print(f"{name:15s} wall {b['wall']:6.2f} s  user {b['user']:6.2f} s  sys {b['sys']:5.2f} s  "
              f"minor faults {int(b['faults']):>9d}")
    ours, peer = best[True], best[False]
    print(f"speed-up: wall x{peer['wall'] / ours['wall']:.2f}, user+sys x{(peer['user'] + peer['sys']) / (ours['user'] + ours['sys']):.2f}, "
          f"faults x{peer['faults'] / max(1, ours['faults']):.1f} fewer")


if __name__ == "__main__":
    main()
