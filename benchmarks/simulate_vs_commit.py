"""simulate_dataset of this tree vs an older commit's, 1 and 2 workers, interleaved, each run a fresh process.

    python benchmarks/simulate_vs_commit.py [--commit b52480e] [--n 4200] [--repeats 2]

Prints wall and images per CPU-second (parent + workers) of each variant, the 2-vs-1-worker ratios,
and whether every run produced the same dataset digest (the bytes must not depend on the code path).
b52480e is the last commit before issue 15 (workers pickled arrays back; sha256 re-read the file).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--commit", default="b52480e")
parser.add_argument("--n", type=int, default=4200)
parser.add_argument("--repeats", type=int, default=2)
args = parser.parse_args()
N, R = args.n, args.repeats
old_root = tempfile.mkdtemp(prefix="dlfm-old-")
archive = subprocess.run(["git", "-C", REPO, "archive", args.commit, "dlfm"], capture_output=True, check=True).stdout
subprocess.run(["tar", "-x", "-C", old_root], input=archive, check=True)
CODE = r'''
import json, resource, sys, tempfile, time
from dlfm.simulation import SimulationConfig, simulate_dataset
n, workers, seed = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
with tempfile.TemporaryDirectory() as out:
    simulate_dataset(SimulationConfig(n_train=3, n_val=3, n_test=3, seed=99), out, workers=1, progress=False)  # warm
    def cpu():
        a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime
    split = n // 5
    c0, t0 = cpu(), time.perf_counter()
    path = simulate_dataset(SimulationConfig(n_train=n - 2 * split, n_val=split, n_test=split, seed=seed), out, workers=workers, progress=False)
    wall, cpus = time.perf_counter() - t0, cpu() - c0
    digest = json.load(open(path / "manifest.json"))["digest"]
print(json.dumps({"wall": wall, "cpu": cpus, "digest": digest}))
'''
rows = {}
for r in range(R):
    for workers in (1, 2):
        for name, root in (("old", old_root), ("new", REPO))[:: 1 if r % 2 == 0 else -1]:
            env = {**os.environ, "PYTHONPATH": root}
            out = subprocess.run([sys.executable, "-c", CODE, str(N), str(workers), "7"], env=env, capture_output=True, text=True, check=True)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            rows.setdefault((name, workers), []).append(res)
            print(name, workers, res, "load", os.getloadavg()[0], flush=True)
digests = {res["digest"] for v in rows.values() for res in v}
print("one digest across old/new and 1/2 workers:", len(digests) == 1)
for key, v in sorted(rows.items()):
    best = min(v, key=lambda x: x["wall"])
    print(key, f"best wall {best['wall']:.2f} s  {N / best['wall']:.1f} img/s  {N / min(x['cpu'] for x in v):.1f} img/CPU-s")
for name in ("old", "new"):
    one, two = min(x["wall"] for x in rows[(name, 1)]), min(x["wall"] for x in rows[(name, 2)])
    c1, c2 = min(x["cpu"] for x in rows[(name, 1)]), min(x["cpu"] for x in rows[(name, 2)])
    print(f"{name}: 2 workers / 1 worker {one / two:.2f}x wall, CPU-s 1w {c1:.2f} vs 2w {c2:.2f} (parallel overhead {100 * (c2 - c1) / c1:+.1f} %)")
import shutil; shutil.rmtree(old_root, ignore_errors=True)  # noqa: E702 - the archived old tree
