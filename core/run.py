"""Runs: fingerprint, run id, run folder, stages in order, reuse of finished work.

``reports/<recipe>/<run_id>/`` (``REPLICATOR_REPORTS``) holds the small committed outputs:
``resolved.yaml``, ``fingerprint.json``, ``metrics.json``. Heavy outputs (checkpoints, weights,
predictions) go to ``artifacts/<recipe>/<run_id>/<stage>/`` (``REPLICATOR_ARTIFACTS``, git-ignored).
A run whose ``metrics.json`` exists is reused; a stage whose ``done.json`` exists is not redone;
a stage with a ``checkpoint.pt`` resumes from it. ``force`` starts over.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .errors import ReplicatorError
from .io import atomic_save_safetensors, atomic_write_text
from .manager import build_plugins
from .recipe import Resolved, StageConfig, resolve
from .rows import DataContext

WEIGHTS = "final.safetensors"


def reports_root() -> Path:
    return Path(os.environ.get("REPLICATOR_REPORTS", "reports"))


def artifacts_root() -> Path:
    return Path(os.environ.get("REPLICATOR_ARTIFACTS", "artifacts"))


def _version(pkg: str) -> str | None:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


def environment() -> dict:
    import torch

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": dev,
        "device_name": torch.cuda.get_device_name(0) if dev == "cuda" else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        **{p: _version(p) for p in ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "arena-replicator")},
    }


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_hash(resolved: Resolved, data_dir: Path) -> tuple[str, dict]:
    files: dict[str, str] = {}
    for stage in resolved.stages:
        plugins = build_plugins(stage.plugins, resolved.file)
        for f in map(Path, plugins.data_files(data_dir)):
            if f.exists() and str(f) not in files:
                files[str(f)] = file_sha256(f)
    digest = hashlib.sha256(json.dumps(sorted(files.values())).encode()).hexdigest()
    return digest, {Path(k).name: v for k, v in files.items()}


def fingerprint(resolved: Resolved, data_dir: Path) -> dict:
    dh, files = data_hash(resolved, data_dir)
    env = environment()
    # what changes results: config, seed, data, device and library versions
    key = json.dumps([resolved.config_hash, resolved.seed, dh, env["device"], env["torch"], env["transformers"],
                      env["peft"]])
    run_id = f"{resolved.name}-{hashlib.sha256(key.encode()).hexdigest()[:8]}-s{resolved.seed}"
    return {"run_id": run_id, "recipe": resolved.name, "config_hash": resolved.config_hash, "seed": resolved.seed,
            "data_hash": dh, "data_files": files, "toggles": resolved.toggles, "environment": env}


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_stage(resolved: Resolved, stage: StageConfig, art: Path, data_dir: Path, progress: bool) -> dict:
    from .model import load_model, trainable_state
    from .train import collect_rows, evaluate, train_stage

    t0 = time.time()
    plugins = build_plugins(stage.plugins, resolved.file)
    ctx = DataContext(data_dir=data_dir, seed=resolved.seed, stage=stage.name, cache_dir=art.parent / "cache",
                      stage_outputs=load_stage_outputs(resolved, stage, art.parent))
    train_rows, valid_rows = collect_rows(plugins, ctx)
    attach_teachers(train_rows, ctx.stage_outputs)
    if not train_rows:
        raise ReplicatorError(f"stage {stage.name}: no training rows")
    if not valid_rows:
        raise ReplicatorError(f"stage {stage.name}: no validation rows (a data source must feed the 'valid' split)")
    if stage.train.max_rows and len(train_rows) > stage.train.max_rows:
        import random

        train_rows = random.Random(resolved.seed).sample(train_rows, stage.train.max_rows)
    print(f"[run] stage {stage.name}: {len(train_rows)} train rows, {len(valid_rows)} validation rows",
          file=sys.stderr, flush=True)
    if stage.predict.max_rows and len(valid_rows) > stage.predict.max_rows:
        import random

        valid_rows = random.Random(resolved.seed + 1).sample(valid_rows, stage.predict.max_rows)
    _seed_everything(resolved.seed)
    model, tok, info = load_model(stage.model, plugins, train=True)
    init_from = art.parent / stage.from_stage / WEIGHTS if stage.from_stage else None
    result = train_stage(stage, plugins, train_rows, model, tok, info, art, resolved.seed, init_from, progress)
    atomic_save_safetensors(trainable_state(model), art / WEIGHTS, metadata={"base": stage.model.base})
    if stage.predict.load_in_8bit:  # inference as the solutions ran it: backbone in 8-bit
        del model
        model, tok = load_for_inference(stage, plugins, art / WEIGHTS)
    result.update(evaluate(model, tok, plugins, stage, valid_rows, art, progress))
    if stage.outputs:
        result["outputs"] = write_stage_outputs(stage, plugins, model, tok, train_rows, ctx, art, progress)
    result.update({"stage": stage.name, "model": {k: v for k, v in info.items() if k != "aux_loss"}, "seconds": round(time.time() - t0, 1)})
    return result


OUTPUTS = "outputs.json"


def write_stage_outputs(stage: StageConfig, plugins, model, tok, train_rows, ctx, art: Path, progress) -> dict:
    """Predictions later stages consume: on the training rows (teachers) and on the pool (pseudo-labels)."""
    from .train import predict_probs

    out: dict = {}
    if "train" in stage.outputs:
        p = predict_probs(model, tok, plugins, train_rows, stage.predict.max_length, stage.predict.batch_tokens,
                          progress)["tta"]
        out["train"] = {r["id"]: [float(x) for x in pr] for r, pr in zip(train_rows, p, strict=True)}
    if "pool" in stage.outputs:
        pool = [r for rows in plugins.all("data_sources", split="pool", ctx=ctx) if rows for r in rows]
        if not pool:
            raise ReplicatorError(f"stage {stage.name}: outputs: [pool] but no data source feeds the 'pool' split")
        p = predict_probs(model, tok, plugins, pool, stage.predict.max_length, stage.predict.batch_tokens,
                          progress)["tta"]
        out["pool"] = {r["id"]: [float(x) for x in pr] for r, pr in zip(pool, p, strict=True)}
        out["pool_rows"] = [{k: v for k, v in r.items() if k != "label"} for r in pool]
    atomic_write_text(art / OUTPUTS, json.dumps(out))
    return {k: len(v) for k, v in out.items()}


def load_stage_outputs(resolved: Resolved, stage: StageConfig, art_root: Path) -> dict:
    """Outputs of the stages before ``stage`` that wrote any."""
    found = {}
    for s in resolved.stages:
        if s.name == stage.name:
            break
        f = art_root / s.name / OUTPUTS
        if s.outputs and f.exists():
            found[s.name] = json.loads(f.read_text())
    return found


def attach_teachers(rows: list[dict], stage_outputs: dict) -> None:
    """``row["teacher"][stage]`` = that stage's probabilities for the row, for every stage that
    predicted on training rows (distillation)."""
    for name, out in stage_outputs.items():
        preds = out.get("train")
        if not preds:
            continue
        for r in rows:
            if r["id"] in preds:
                r.setdefault("teacher", {})[name] = preds[r["id"]]


def load_for_inference(stage: StageConfig, plugins, weights: Path):
    """The stage's model rebuilt for prediction (8-bit when ``predict.load_in_8bit``) with its trained weights."""
    from safetensors.torch import load_file

    from .model import load_model, load_trainable

    model, tok, _ = load_model(stage.model, plugins, train=False, load_in_8bit=stage.predict.load_in_8bit or None)
    load_trainable(model, load_file(str(weights)), where=str(weights))
    return model, tok


def run(resolved: Resolved, data_dir: Path, force: bool = False, progress: bool = True) -> tuple[Path, dict, bool]:
    """Run every stage of ``resolved``; return (run folder, metrics, reused)."""
    fp = fingerprint(resolved, data_dir)
    run_dir = reports_root() / resolved.name / fp["run_id"]
    art = artifacts_root() / resolved.name / fp["run_id"]
    metrics_file = run_dir / "metrics.json"
    if metrics_file.exists() and not force:
        if (art / resolved.final.name / WEIGHTS).exists():
            return run_dir, json.loads(metrics_file.read_text()), True
        print(f"[run] {run_dir} has metrics but its weights are not under {art} (a committed report on a "
              "fresh clone?): recomputing, so that `replicate predict` has a model", file=sys.stderr, flush=True)
    if force and art.exists():
        shutil.rmtree(art)
    atomic_write_text(run_dir / "resolved.yaml", resolved.to_yaml())
    atomic_write_text(run_dir / "fingerprint.json", json.dumps(fp, indent=2))
    stages = {}
    for stage in resolved.stages:
        sart = art / stage.name
        done = sart / "done.json"
        if done.exists():
            stages[stage.name] = json.loads(done.read_text())
            print(f"[run] stage {stage.name}: already done, reused", file=sys.stderr)
            continue
        result = run_stage(resolved, stage, sart, data_dir, progress)
        atomic_write_text(done, json.dumps(result, indent=2))
        stages[stage.name] = result
    final = dict(stages[resolved.final.name])
    metrics = {"run_id": fp["run_id"], "recipe": resolved.name, "final_stage": resolved.final.name}
    metrics.update({k: v for k, v in final.items() if k not in ("train_loss_history", "model", "stage")})
    metrics["stages"] = {n: {k: v for k, v in s.items() if k != "train_loss_history"} for n, s in stages.items()}
    atomic_write_text(metrics_file, json.dumps(metrics, indent=2))
    return run_dir, metrics, False


def find_run(run: str) -> Path:
    """A run folder, or a run id looked up under the reports folder."""
    p = Path(run)
    if (p / "fingerprint.json").exists():
        return p
    hits = list(reports_root().glob(f"*/{run}")) if "/" not in run else []
    if len(hits) == 1:
        return hits[0]
    raise ReplicatorError(f"run {run!r}: no run folder with fingerprint.json found (give reports/<recipe>/<run_id>)")


def predict(run: str, test_csv: Path, out: Path, progress: bool = True) -> dict:
    """Write a Kaggle/mle-bench submission for ``test_csv`` with the final model of ``run``."""
    import numpy as np
    import pandas as pd

    from .data import read_competition_csv
    from .train import postprocess, predict_probs

    run_dir = find_run(run)
    fp = json.loads((run_dir / "fingerprint.json").read_text())
    resolved = resolve(run_dir / "resolved.yaml", check_plugins=False)
    stage = resolved.final
    art = artifacts_root() / fp["recipe"] / fp["run_id"] / stage.name
    weights = art / WEIGHTS
    if not weights.exists():
        raise ReplicatorError(f"{weights} is missing: run `replicate run` for this recipe first "
                              f"(artifacts live under REPLICATOR_ARTIFACTS={artifacts_root()})")
    rows = read_competition_csv(test_csv, require_labels=False)
    plugins = build_plugins(stage.plugins, str(run_dir / "resolved.yaml"))
    model, tok = load_for_inference(stage, plugins, weights)
    probs = predict_probs(model, tok, plugins, rows, stage.predict.max_length, stage.predict.batch_tokens, progress)
    valid = json.loads((art / "valid_predictions.json").read_text())
    fit = (np.array([valid[f"tta_{k}"] for k in ("a", "b", "tie")]).T,
           np.array([valid[f"label_{k}"] for k in ("a", "b", "tie")]).T)
    final = postprocess(plugins, probs["tta"], rows, fit=fit)
    final = np.clip(final, 0.0, 1.0)
    final = final / final.sum(axis=1, keepdims=True)
    sub = pd.DataFrame({"id": [r["id"] for r in rows], "winner_model_a": final[:, 0],
                        "winner_model_b": final[:, 1], "winner_tie": final[:, 2]})
    out = Path(out)
    atomic_write_text(out, sub.to_csv(index=False, float_format="%.10f"))
    return {"rows": len(rows), "out": str(out), "run": str(run_dir)}
