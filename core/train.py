"""The runner of one stage, written out in one place: data -> model -> train -> predict -> metrics.

Single process here; the same code runs under ``accelerate launch`` on several GPUs (each
process takes its share of every optimizer step's micro-batches; only the main process writes).
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

from . import metrics as M
from .errors import ReplicatorError
from .io import atomic_torch_save, atomic_write_text
from .recipe import StageConfig
from .rows import DataContext

IDENTITY = "identity"


# ---------------------------------------------------------------- data


def collect_rows(plugins, ctx: DataContext) -> tuple[list[dict], list[dict]]:
    """Validation rows first (so train sources can de-duplicate against them), then training rows."""
    valid = [r for rows in plugins.all("data_sources", split="valid", ctx=ctx) if rows for r in rows]
    ctx.valid_groups = {r["group"] for r in valid}
    ctx.test_groups = {r["group"] for rows in plugins.all("data_sources", split="test", ctx=ctx) if rows for r in rows}
    train = [r for rows in plugins.all("data_sources", split="train", ctx=ctx) if rows for r in rows]
    leaked = sum(r["group"] in ctx.valid_groups for r in train)
    if leaked:
        raise ReplicatorError(f"{leaked} training rows share a prompt with validation rows; "
                              "a data source did not de-duplicate against ctx.valid_groups")
    for name, rows in (("train", train), ("valid", valid)):
        bad = [r["id"] for r in rows if r.get("label") is None]
        if bad:
            raise ReplicatorError(f"{len(bad)} {name} rows have no label (first: {bad[0]})")
    return train, valid


class Encoder:
    """Tokenizes rows through the prompt_format hook, once per (row, view, budget)."""

    def __init__(self, plugins, tokenizer):
        self.plugins, self.tok, self.cache = plugins, tokenizer, {}
        self.truncated = 0
        self.count = 0

    def __call__(self, row: dict, max_length: int) -> list[int]:
        key = (row["id"], row.get("swapped", False), row.get("view", ""), max_length)
        if key not in self.cache:
            enc = self.plugins.one("prompt_format", row=row, tokenizer=self.tok, max_length=max_length)
            if len(enc.input_ids) > max_length:
                raise ReplicatorError(f"prompt_format returned {len(enc.input_ids)} tokens for row "
                                      f"{row['id']}, over the budget {max_length}")
            self.cache[key] = enc.input_ids
            self.count += 1
            self.truncated += bool(enc.truncated)
        return self.cache[key]


def length_grouped_batches(lengths: list[int], units: list[list[int]], batch_size: int, rng: random.Random):
    """Micro-batches of about ``batch_size`` rows with similar lengths; rows of a unit stay together.

    Units (a row, or rows sharing a ``pair`` key) are shuffled, taken in mega-batches of 32
    micro-batches, sorted by length inside each, cut into micro-batches, and the micro-batches
    are shuffled: little padding, still random.
    """
    units = list(units)
    rng.shuffle(units)
    mega = batch_size * 32
    batches: list[list[int]] = []
    for start in range(0, len(units), mega):
        chunk = sorted(units[start:start + mega], key=lambda u: -max(lengths[i] for i in u))
        cur: list[int] = []
        for u in chunk:
            if cur and len(cur) + len(u) > batch_size:
                batches.append(cur)
                cur = []
            cur = cur + u
        if cur:
            batches.append(cur)
    rng.shuffle(batches)
    return batches


def units_of(rows: list[dict]) -> list[list[int]]:
    groups: dict[str, list[int]] = {}
    out: list[list[int]] = []
    for i, r in enumerate(rows):
        if r.get("pair") is None:
            out.append([i])
        else:
            if r["pair"] not in groups:
                groups[r["pair"]] = []
                out.append(groups[r["pair"]])
            groups[r["pair"]].append(i)
    return out


def collate(seqs: list[list[int]], pad_id: int, device):
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


def forward_logits(model, ids, mask):
    """Preference (+ auxiliary) logits: the sequence-classification model pools its head at the last
    non-pad token of each row (inputs are right-padded)."""
    out = model(input_ids=ids, attention_mask=mask)
    return out.logits


# ---------------------------------------------------------------- schedule


def plan(train_rows, stage: StageConfig, plugins, encoder, seed: int):
    """Per epoch: augmented rows and their micro-batches; then the optimizer-step schedule."""
    tcfg = stage.train
    n_epochs = max(1, math.ceil(tcfg.epochs))
    epochs = []
    for e in range(n_epochs):
        rows = plugins.chain("augment", "rows", list(train_rows), epoch=e, seed=seed)
        lengths = [len(encoder(r, tcfg.max_length)) for r in rows]
        batches = length_grouped_batches(lengths, units_of(rows), tcfg.batch_size, random.Random(f"{seed}:{e}"))
        if e == n_epochs - 1 and tcfg.epochs < n_epochs:
            batches = batches[: max(1, int(len(batches) * (tcfg.epochs - (n_epochs - 1))))]
        epochs.append((rows, batches))
    micro = [(e, b) for e, (_, batches) in enumerate(epochs) for b in batches]
    steps = math.ceil(len(micro) / tcfg.grad_accum)
    if tcfg.max_steps:
        steps = min(steps, tcfg.max_steps)
    return epochs, micro, steps


# ---------------------------------------------------------------- training


def _param_groups(model, tcfg, head_name: str):
    head, body = [], []
    for n, p in model.named_parameters():
        if p.requires_grad:
            (head if f".{head_name}." in f".{n}" or n.startswith(head_name + ".") else body).append(p)
    body_lr = tcfg.lr
    if tcfg.lr_rule == "alpha_over_r":  # 16th place: backbone lr = alpha / r x head lr
        lora = getattr(getattr(model, "peft_config", {}).get("default"), "r", None)
        if lora is None:
            raise ReplicatorError("train.lr_rule alpha_over_r needs model.lora")
        cfg = model.peft_config["default"]
        body_lr = cfg.lora_alpha / cfg.r * tcfg.head_lr
    groups = [{"params": body, "lr": body_lr}]
    if head:
        groups.append({"params": head, "lr": tcfg.head_lr or tcfg.lr})
    return [g for g in groups if g["params"]]


def train_stage(stage: StageConfig, plugins, train_rows, model, tok, info, art: Path, seed: int,
                init_from: Path | None = None, progress: bool = True) -> dict:
    """Train ``model`` on ``train_rows``; resume from ``art/checkpoint.pt`` when present."""
    import torch
    from accelerate import Accelerator
    from safetensors.torch import load_file
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    from .model import load_trainable, trainable_state

    tcfg = stage.train
    acc = Accelerator()
    encoder = Encoder(plugins, tok)
    epochs, micro, steps = plan(train_rows, stage, plugins, encoder, seed)
    if init_from is not None:
        n = load_trainable(model, load_file(str(init_from)), skip_head=stage.reinit_head, where=str(init_from))
        print(f"[train] started from {init_from} ({n} tensors{', head re-initialised' if stage.reinit_head else ''})",
              file=sys.stderr)
    optimizer = torch.optim.AdamW(_param_groups(model, tcfg, info["head"]), lr=tcfg.lr,
                                  weight_decay=tcfg.weight_decay)
    scheduler = get_scheduler(tcfg.schedule if tcfg.schedule != "constant" else "constant_with_warmup",
                              optimizer, num_warmup_steps=tcfg.warmup_steps, num_training_steps=steps)
    model, optimizer, scheduler = acc.prepare(model, optimizer, scheduler)
    loss_fn = plugins.one("loss")
    aux_loss = info.get("aux_loss")  # auxiliary heads add their own term (head hookspec)

    ckpt = art / "checkpoint.pt"
    start, history = 0, []
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        load_trainable(acc.unwrap_model(model), state["trainable"], where=str(ckpt))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.random.set_rng_state(state["torch_rng"])
        if torch.cuda.is_available() and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        start, history = state["step"], state["history"]
        print(f"[train] resuming from {ckpt} at step {start}/{steps}", file=sys.stderr, flush=True)

    def save_checkpoint(step):
        if acc.is_main_process:
            atomic_torch_save({
                "step": step, "trainable": trainable_state(acc.unwrap_model(model)),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "torch_rng": torch.random.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "history": history,
            }, ckpt)

    crash_after = int(os.environ.get("REPLICATOR_CRASH_AFTER_STEP", "0"))  # tests: simulate a kill
    model.train()
    group = tcfg.grad_accum * acc.num_processes
    bar = tqdm(total=steps, initial=start, desc=f"train {stage.name}", disable=not (progress and acc.is_main_process),
               dynamic_ncols=True, file=sys.stderr)
    t0, tokens, ema = time.time(), 0, None
    for step in range(start, steps):
        mine = micro[step * group:(step + 1) * group][acc.process_index::acc.num_processes]
        step_loss = 0.0
        for e, batch in mine:
            rows = [epochs[e][0][i] for i in batch]
            ids, mask = collate([encoder(r, tcfg.max_length) for r in rows], tok.pad_token_id, acc.device)
            labels = torch.tensor([r["label"] for r in rows], dtype=torch.float32, device=acc.device)
            logits = forward_logits(model, ids, mask)
            extra = {"rows": rows, "input_ids": ids, "attention_mask": mask}
            loss = loss_fn(logits, labels, extra)
            if aux_loss is not None:
                loss = loss + aux_loss(logits, extra)
            loss = loss / len(mine)
            acc.backward(loss)
            step_loss += loss.item()
            tokens += int(mask.sum())
        if tcfg.max_grad_norm > 0:
            acc.clip_grad_norm_(model.parameters(), tcfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(step_loss):
            save_checkpoint(step)
            raise ReplicatorError(f"training loss is {step_loss} at step {step + 1}; last good checkpoint kept at {ckpt}")
        history.append(round(step_loss, 6))
        ema = step_loss if ema is None else 0.9 * ema + 0.1 * step_loss
        bar.update(1)
        bar.set_postfix(loss=f"{ema:.4f}", tok_s=f"{tokens / max(time.time() - t0, 1e-9):.0f}")
        done = step + 1
        if done % tcfg.checkpoint_every == 0 or done == steps:
            save_checkpoint(done)
        if crash_after and done == crash_after:
            raise RuntimeError(f"simulated crash after step {done} (REPLICATOR_CRASH_AFTER_STEP)")
    bar.close()
    elapsed = time.time() - t0
    return {
        "optimizer_steps": steps,
        "resumed_at_step": start,
        "n_train_rows": len(train_rows),
        "n_train_rows_augmented": sum(len(r) for r, _ in epochs),
        "train_loss_first": float(np.mean(history[:10])) if history else None,
        "train_loss_last": float(np.mean(history[-10:])) if history else None,
        "train_loss_history": history,
        "train_tokens_per_second": round(tokens / elapsed, 1) if elapsed > 0 and tokens else None,
        "train_truncated_share": round(encoder.truncated / max(encoder.count, 1), 4),
    }


# ---------------------------------------------------------------- prediction


def views_of(plugins) -> list:
    class Identity:
        name = IDENTITY

        @staticmethod
        def apply(row):
            return row

        @staticmethod
        def invert(probs):
            return probs

    views = [Identity()]
    for vs in plugins.all("tta"):
        views.extend(vs)
    return views


def predict_probs(model, tok, plugins, rows, max_length: int, batch_tokens: int, progress: bool = True,
                  use_tta: bool = True) -> dict[str, np.ndarray]:
    """Probabilities per view (already inverted to the original order) and their mean ``tta``."""
    import torch
    from tqdm.auto import tqdm

    encoder = Encoder(plugins, tok)
    device = next(model.parameters()).device
    views = views_of(plugins) if use_tta else views_of(plugins)[:1]
    out: dict[str, np.ndarray] = {}
    model.eval()
    for view in views:
        vrows = [dict(view.apply(r), view=view.name) for r in rows]
        seqs = [encoder(r, max_length) for r in vrows]
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        probs = np.zeros((len(rows), 3), dtype=np.float64)
        bar = tqdm(total=len(rows), desc=f"predict {view.name}", disable=not progress, dynamic_ncols=True,
                   file=sys.stderr)
        i = 0
        with torch.inference_mode():
            while i < len(order):
                width = len(seqs[order[i]])
                n = max(1, batch_tokens // max(width, 1))
                idx = order[i:i + n]
                ids, mask = collate([seqs[j] for j in idx], tok.pad_token_id, device)
                logits = forward_logits(model, ids, mask)[:, :3].float()
                probs[idx] = torch.softmax(logits, dim=-1).cpu().numpy()
                i += n
                bar.update(len(idx))
        bar.close()
        out[view.name] = view.invert(probs)
    out["tta"] = np.mean([out[v.name] for v in views], axis=0)
    return out


def postprocess(plugins, probs, rows, fit=None) -> np.ndarray:
    out = plugins.chain("postprocess", "probs", np.asarray(probs, dtype=np.float64), rows=rows, fit=fit)
    out = np.asarray(out, dtype=np.float64)
    if out.shape != (len(rows), 3) or not np.isfinite(out).all() or (out < 0).any():
        raise ReplicatorError("postprocess returned invalid probabilities (shape, NaN or negative)")
    return out


def crossfit_postprocess(plugins, probs, rows, labels) -> np.ndarray:
    """Postprocess validation predictions honestly: fit on one half of the prompt groups, apply to
    the other, and vice versa (calibrators never see the rows they are scored on)."""
    halves = np.array([int(r["group"], 16) % 2 for r in rows])
    out = np.zeros_like(probs)
    for h in (0, 1):
        tgt, src = halves == h, halves != h
        fit = (probs[src], labels[src]) if src.any() else None
        if tgt.any():
            out[tgt] = postprocess(plugins, probs[tgt], [r for r, m in zip(rows, tgt, strict=True) if m], fit=fit)
    return out


def evaluate(model, tok, plugins, stage: StageConfig, valid_rows, art: Path, progress=True) -> dict:
    labels = np.array([r["label"] for r in valid_rows], dtype=np.float64)
    preds = predict_probs(model, tok, plugins, valid_rows, stage.predict.max_length, stage.predict.batch_tokens,
                          progress)
    final = crossfit_postprocess(plugins, preds["tta"], valid_rows, labels)
    result = {"n_valid_rows": len(valid_rows), "uniform_log_loss": M.UNIFORM_LOG_LOSS}
    result.update(M.summarize(preds[IDENTITY], labels))
    result.update(M.summarize(preds["tta"], labels, "tta_"))
    result.update(M.summarize(final, labels, "final_"))
    for name, p in preds.items():
        if name not in (IDENTITY, "tta"):
            result.update(M.summarize(p, labels, f"view_{name}_"))
    cols = {"id": [r["id"] for r in valid_rows]}
    for name, p in list(preds.items()) + [("final", final)]:
        for k, lab in enumerate(("a", "b", "tie")):
            cols[f"{name}_{lab}"] = p[:, k].tolist()
    for k, lab in enumerate(("a", "b", "tie")):
        cols[f"label_{lab}"] = labels[:, k].tolist()
    atomic_write_text(art / "valid_predictions.json", json.dumps(cols))
    return result
