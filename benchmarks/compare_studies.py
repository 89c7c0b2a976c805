"""Are two study folders the same study, bit for bit? (`python benchmarks/compare_studies.py A B`)

For the runs of `tables/runs.csv` (matched by key, whatever their folder names): every safetensors file of
each run (weights, AdamW state, RNG; `torch.equal` per tensor), `metrics.jsonl` and `batches.npy` byte for
byte; then every table byte for byte (runs.csv without its hash/dir columns), and the tables that name run
folders once the second study's folder names are mapped to the first's; last, the metric keys that differ
(wall-clock ones such as tokens_per_s are expected to). Used to check that a release trains the default
study bit-identically to the previous one, whose run folders were named by another identity.
"""
import csv, hashlib, sys
from pathlib import Path
import torch
from safetensors.torch import load_file

a, b = Path(sys.argv[1]), Path(sys.argv[2])

def index(d):
    with open(d / "tables" / "runs.csv") as f:
        return {r["key"]: d / "runs" / r["dir"] for r in csv.DictReader(f)}

ia, ib = index(a), index(b)
assert set(ia) == set(ib), (set(ia) ^ set(ib))
n_files = n_tensors = 0
bad = []
for key in sorted(ia):
    ra, rb = ia[key], ib[key]
    fa = sorted(p.relative_to(ra) for p in ra.rglob("*.safetensors"))
    fb = sorted(p.relative_to(rb) for p in rb.rglob("*.safetensors"))
    if fa != fb:
        bad.append((key, "file lists differ", set(fa) ^ set(fb)))
        continue
    for rel in fa:
        x, y = load_file(ra / rel), load_file(rb / rel)
        n_files += 1
        if x.keys() != y.keys() or any(not torch.equal(x[k], y[k]) for k in x):
            bad.append((key, str(rel)))
        n_tensors += len(x)
    for name in ["metrics.jsonl", "batches.npy"]:
        if (ra / name).is_file() and (ra / name).read_bytes() != (rb / name).read_bytes():
            bad.append((key, name))
print(f"runs {len(ia)}, safetensors files {n_files}, tensors {n_tensors}, differing: {bad[:10]} ({len(bad)})")
ta = sorted(p.name for p in (a / "tables").glob("*.csv"))
tb = sorted(p.name for p in (b / "tables").glob("*.csv"))
print("table lists equal:", ta == tb, set(ta) ^ set(tb))
same, diff = [], []
for name in ta:
    if name == "runs.csv":
        def rows(d):
            with open(d / "tables" / name) as f:
                return [{k: v for k, v in r.items() if k not in ("hash", "dir")} for r in csv.DictReader(f)]
        (same if rows(a) == rows(b) else diff).append(name + " (without hash, dir)")
        continue
    (same if (a / "tables" / name).read_bytes() == (b / "tables" / name).read_bytes() else diff).append(name)
print(f"tables identical: {len(same)}; differing: {diff}")

# the tables that name run folders: compare with the new folder names mapped to the old ones
import json
ren = {}
for key in ia:
    ren[ib[key].name] = ia[key].name
for name in diff:
    if name.startswith("runs.csv"):
        continue
    text = (b / "tables" / name).read_text()
    for new, old in ren.items():
        text = text.replace(new, old)
    print(name, "identical once folder names are mapped:", text == (a / "tables" / name).read_text())
# metrics: which keys differ
keys = set()
for key in ia:
    ma = [json.loads(l) for l in (ia[key] / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(l) for l in (ib[key] / "metrics.jsonl").read_text().splitlines()]
    assert len(ma) == len(mb), key
    for x, y in zip(ma, mb):
        keys |= {k for k in set(x) | set(y) if x.get(k) != y.get(k)}
print("metrics.jsonl keys that differ:", keys)
