"""One configuration's memory in a batch, measured, against wdlab's estimate (--max-memory).

For each scenario, fresh processes train K = 4, 16 and 32 configurations in one batch and store
them; each measures its peak resident memory (ru_maxrss) above its resident memory just before
the batch (after a warm-up batch). The least-squares slope over K is the measured cost of one
configuration; the baseline is the process's resident memory after imports and the data load,
before any batch (outside the budget). Usage, from the repository root:

    .venv/bin/python bench/bench_memory.py [--only cnn]
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"  # custom_model.py, for the torch.func case
SCENARIOS = {
    "digits mlp 64,32 adam full-batch 200 ep": {
        "data": {"source": "digits"},
        "model": {"kind": "mlp", "hidden": [64, 32]},
        "train": {"optimizer": "adam", "epochs": 200, "eval_every": 10},
    },
    "breast_cancer mlp 256,256 sgd bs64 20 ep": {
        "data": {"source": "breast_cancer"},
        "model": {"kind": "mlp", "hidden": [256, 256]},
        "train": {"optimizer": "sgd", "epochs": 20, "batch_size": 64},
    },
    "seed-noise 1000 seed-mlp sgd (Gram) 100 ep": {
        "data": {"source": "seed-noise"},
        "model": {"kind": "seed-mlp"},
        "train": {"optimizer": "sgd", "epochs": 100, "eval_every": 10},
    },
    "wine linear adam 20000 ep": {
        "data": {"source": "wine"},
        "model": {"kind": "linear"},
        "train": {"optimizer": "adam", "epochs": 20000, "eval_every": 100},
    },
    "mnist1d cnn 16,32 batchnorm adamw bs128 3 ep": {
        "data": {"source": "mnist1d"},
        "model": {"kind": "cnn", "hidden": [16, 32], "batchnorm": True},
        "train": {"optimizer": "adamw", "epochs": 3, "batch_size": 128, "eval_every": 3},
    },
    "digits custom (torch.func) adam 50 ep": {
        "data": {"source": "digits"},
        "model": {"kind": "custom_model:make"},
        "train": {"optimizer": "adam", "epochs": 50, "eval_every": 10},
    },
}

CHILD = """
import json, resource, sys, tempfile
from wdlab.config import validate
from wdlab.devices import process_rss
from wdlab.pipelines.experiment import load_data, model_spec
from wdlab.pipelines.study import bytes_per_config
from wdlab.records import RunConfig
from wdlab.store import Store
from wdlab.trainer import import_optimizer_runtime, train

raw, k = json.loads(sys.argv[1]), int(sys.argv[2])
cfg = validate(raw)
t = cfg.train
import_optimizer_runtime()
ds = load_data(cfg.data)
spec = model_spec(cfg.model, ds)
kw = t.train_kwargs(shuffle_seed=0) | {"device": "cpu"}
est = bytes_per_config(spec, ds, t.batch_size or None, t.epochs, t.eval_every, t.optimizer)
configs = [
    RunConfig(mode="coupled", weight_decay=1e-4 * (i + 1), lr=0.01, optimizer=t.optimizer)
    for i in range(k)
]
train(spec, ds, configs[:1], **(kw | {"epochs": 2}))  # one-time allocations: the baseline
base = process_rss()
res = train(spec, ds, configs, **kw)
with tempfile.TemporaryDirectory() as d, Store(d) as store:
    store.init_study("m", cfg.to_dict(), configs, "bench")
    store.save_batch(res)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"base": base, "peak": peak, "est": est}))
"""


def child(raw: dict, k: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(raw), str(k)],
        capture_output=True,
        text=True,
        check=True,
        cwd=TESTS,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Measure every scenario (or those whose name contains ``--only``) and print the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="", help="run only the scenarios whose name has this")
    args = ap.parse_args()
    ks = (4, 16, 32)
    mb = 2**20
    print(f"{'scenario':<44} {'measured':>9} {'estimate':>9} {'ratio':>6} {'baseline':>9}")
    for name, raw in SCENARIOS.items():
        if args.only not in name:
            continue
        r = {k: child(raw, k) for k in ks}
        ys = [r[k]["peak"] - r[k]["base"] for k in ks]
        kbar, ybar = sum(ks) / len(ks), sum(ys) / len(ys)
        slope = sum((k - kbar) * (y - ybar) for k, y in zip(ks, ys, strict=True)) / sum(
            (k - kbar) ** 2 for k in ks
        )
        est = r[ks[0]]["est"]
        print(
            f"{name:<44} {slope / mb:>6.2f} MB {est / mb:>6.2f} MB {est / slope:>6.2f} "
            f"{r[ks[0]]['base'] / mb:>6.0f} MB"
        )


if __name__ == "__main__":
    main()
