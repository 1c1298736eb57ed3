"""Training throughput: the project's trainer against the Hugging Face ``Trainer``, back to back.

    python -m benchmarks.train_throughput            # CPU, fp32, embedded:gemma-3-270m, 256 and 1024 tokens
    python -m benchmarks.train_throughput --quick    # a fast check of the whole path (tiny:llama, 2 steps)
    python -m benchmarks.train_throughput --cuda     # CUDA, bf16, Gemma-2-2B and 9B shapes (random weights)
    python -m benchmarks.train_throughput --dtype bfloat16   # CPU, bf16 weights (HF: bf16=True), 256/1024

In one invocation, back to back (each trainer in a fresh child process, so that nothing one sets or
leaves behind, such as the allocator setting of :func:`replicator.core.train.trainer.keep_freed_memory`,
reaches the next, and each peak memory is its own), per token budget (``--lengths``), on the same model
(loaded as the project loads it, :func:`replicator.core.model.loading.load_model`: a fresh copy per trainer,
the same LoRA initialisation), the same rows (the competition rows of ``$REPLICATOR_DATA_DIR`` through
the recipe's data plugin, one seeded sample), the same token ids (tokenised once through the recipe's
``prompt_format`` plugin; swap augmentation off so that every trainer sees the same ids), the same LoRA
and optimizer settings, the same rows per optimizer step and thread count, one epoch over the sample each:

* ``hf_random``: ``transformers.Trainer`` + peft, random order, ``DataCollatorWithPadding``;
* ``hf_grouped``: the same with ``train_sampling_strategy="group_by_length"`` (``group_by_length``
  before transformers 5);
* ``ours_grouped``: :func:`replicator.core.train.trainer.train_stage`, length-grouped ``batch_size``-row
  micro-batches (what recipes do by default);
* ``ours_tokens``: the same with ``train.batch_tokens``: the budget is the smallest one whose epoch has
  as many micro-batches as the others have optimizer steps (``grad_accum`` 1), so an optimizer step
  holds on average the same number of rows;
* ``packed`` (``--cuda`` with flash-attn only): ``ours_tokens`` with ``train.packed``: the rows of a
  micro-batch concatenated into one padding-free sequence (position ids restarting per row, as
  ``DataCollatorWithFlattening`` makes them) under flash attention.

The first ``--warmup`` optimizer steps of every trainer are not timed. Per trainer it prints useful
(non-pad) tokens/s, the ratios to ``hf_random`` and ``hf_grouped``, the padding share of the timed
forward passes, the useful tokens per CPU-second of the process (threads added up: less sensitive than
wall time to other processes on the same cores), the peak resident memory during the trainer's run
(VmRSS sampled every 20 ms; on CUDA the peak allocated GPU memory), and the utilisation: 4 x N x useful
tokens/s (N = parameters of the backbone without the embeddings, the adapters and the head; a frozen
weight costs 2 FLOPs per token forward and 2 for the input gradient; LoRA's own FLOPs and attention are
not counted) over the FLOP/s of a 2048^3 matmul in the benchmark's dtype (``--dtype``: fp32 or bf16, the
peak the trainer can reach in that dtype) measured in the trainer's process just before it (CPU), or the
GPU's bf16 peak (MFU, on CUDA). The CPU model and its bf16 flags come first. With ``--dtype bfloat16`` both
trainers get the model in bf16 as the project loads it; the HF ``Trainer`` runs with ``bf16=True`` (its
best CPU setting, with ``group_by_length`` in ``hf_grouped``), the project's trainer with its precision
rules (fp32 masters of the trainable weights, bf16 autocast: core/model/precision.py). One JSON line per
trainer and length, then a table.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "smoke.yaml"
#: dense bf16 peak TFLOP/s by a substring of the CUDA device name (vendor data sheets, SXM parts)
BF16_PEAK_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 70.0,
    "4090": 165.0,
    "T4": 65.0,
}
#: Gemma-2 shapes of the GPU comparison (the published configs' layer sizes; random weights)
GEMMA2_SHAPES = {
    "gemma-2-2b": dict(
        hidden_size=2304,
        intermediate_size=9216,
        num_hidden_layers=26,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=256,
    ),
    "gemma-2-9b": dict(
        hidden_size=3584,
        intermediate_size=14336,
        num_hidden_layers=42,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=256,
    ),
}
TRAINERS = ("hf_random", "hf_grouped", "ours_grouped", "ours_tokens", "packed")


# ---------------------------------------------------------------- measuring


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class Meter:
    """Counts what every forward pass of ``model`` sees and when each optimizer step ends (a global
    optimizer hook: the same for the Trainer's optimizer and ours); samples the resident memory."""

    def __init__(self, model, cuda: bool):
        import torch
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self.cuda, self.steps, self.cpu, self.forwards = cuda, [], [], []
        self.start = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._handles = [
            model.register_forward_pre_hook(self._forward, with_kwargs=True),
            register_optimizer_step_post_hook(self._step),
        ]
        self._thread = threading.Thread(target=self._sample, daemon=True)
        if cuda:
            torch.cuda.reset_peak_memory_stats()

    def _forward(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask, pos = kwargs.get("attention_mask"), kwargs.get("position_ids")
        useful = int(mask.sum()) if mask is not None else ids.numel()
        self.forwards.append(
            (
                len(self.steps),
                ids.shape[0] if mask is not None else int((pos == 0).sum()) if pos is not None else 1,
                useful,
                ids.numel(),
            )
        )

    def _step(self, optimizer, args, kwargs):
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        self.steps.append(time.perf_counter())
        self.cpu.append(time.process_time())

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        for h in self._handles:
            h.remove()

    def result(self, warmup: int) -> dict:
        """Tokens/s over the optimizer steps after the first ``warmup`` (forward passes of steps
        ``warmup..`` between the end of step ``warmup`` and the end of the last)."""
        import torch

        if warmup < 1 or len(self.steps) <= warmup:
            raise RuntimeError(
                f"{len(self.steps)} optimizer steps and {warmup} warm-up step(s): the timing "
                "starts at the end of the last warm-up step (at least 1) and needs one more"
            )
        timed = [f for f in self.forwards if f[0] >= warmup and f[0] < len(self.steps)]
        seconds = self.steps[-1] - self.steps[warmup - 1]
        cpu = self.cpu[-1] - self.cpu[warmup - 1]
        useful, padded, rows = sum(f[2] for f in timed), sum(f[3] for f in timed), sum(f[1] for f in timed)
        n_steps = len(self.steps) - warmup
        return {
            "steps": len(self.steps),
            "timed_steps": n_steps,
            "seconds": round(seconds, 2),
            "all_useful_tokens": sum(f[2] for f in self.forwards),
            "useful_tokens": useful,
            "useful_tokens_per_s": round(useful / seconds, 1),
            "cpu_seconds": round(cpu, 2),
            "useful_tokens_per_cpu_s": round(useful / cpu, 1),
            "padding_share": round(1 - useful / padded, 4),
            "rows_per_step": round(rows / n_steps, 2),
            "micro_batches_per_step": round(len(timed) / n_steps, 2),
            "peak_rss_gib": round(self.peak / 2**30, 2),
            "rss_before_gib": round(self.start / 2**30, 2),
            "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if self.cuda else None,
        }


def matmul_gflops(n: int = 2048, dtype: str = "float32", repeats: int = 5) -> float:
    """FLOP/s of an n^3 matmul in this process (best of ``repeats`` after one warm-up), in GFLOP/s."""
    import torch

    cuda = torch.cuda.is_available() and dtype != "float32"
    dev = "cuda" if cuda else "cpu"
    a = torch.randn(n, n, dtype=getattr(torch, dtype), device=dev)
    b = torch.randn(n, n, dtype=getattr(torch, dtype), device=dev)
    a @ b
    best = math.inf
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def cpu_line() -> str:
    """The CPU model, its bf16 flags and what ``model.dtype: auto`` loads on it."""
    import platform

    from replicator.core.model.precision import auto_dtype, cpu_bf16, cpu_flags

    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    flags = sorted(f for f in cpu_flags() if f.startswith(("amx", "avx512_bf16", "avx512f")))
    return (f"CPU: {model or platform.processor() or platform.machine()}; flags {' '.join(flags) or 'none'}; "
            f"native bf16 {'yes' if cpu_bf16() else 'no'}; model.dtype auto -> {auto_dtype('cpu')}")


def backbone_params(model) -> int:
    """Parameters of the backbone that every token meets: no embeddings, adapters or head."""
    from replicator.core.model.tensors import HEAD_NAMES

    emb = {id(p) for p in model.get_input_embeddings().parameters()}
    return sum(
        p.numel()
        for n, p in model.named_parameters()
        if id(p) not in emb
        and "lora_" not in n
        and not any(f".{h}." in f".{n}" for h in HEAD_NAMES)
        and "modules_to_save" not in n
    )


# ---------------------------------------------------------------- the setting


@dataclasses.dataclass
class Setting:
    """One token budget: the resolved stage, its plugins, the rows and their token ids."""

    length: int
    stage: object
    plugins: object
    rows: list
    ids: list
    seed: int
    rows_per_step: int
    batch_size: int
    grad_accum: int


def overrides_for(args, length: int) -> list[str]:
    return [
        f"model.base={args.model}",
        f"train.max_length={length}",
        f"train.batch_size={args.batch_size}",
        "train.global_batch=null",  # one process: batch_size x grad_accum rows per step, as the HF Trainer's
        f"train.grad_accum={args.grad_accum}",
        "plugins.swap.train=none",
        "train.checkpoint_every=1000000",
        "train.max_rows=0",
        "train.epochs=1",
        "train.warmup_steps=2",
        "train.max_steps=0",
        f"model.dtype={args.dtype}",
        # the single-split fine-tuning of the solution recipes: every layer trains (smoke's -t single_split)
        "train.crossfit=null", "model.offset=null", "model.freeze_layers=0", "model.cache_frozen=false",
        "plugins.head.init=zeros",
        *args.override,
    ]


def prepare(args, length: int, n_rows: int) -> Setting:
    from replicator.core.config.catalogue import build_plugins
    from replicator.core.config.recipe import resolve
    from replicator.core.data.collect import collect_rows
    from replicator.core.data.files import data_dir
    from replicator.core.data.splits import sample_rows
    from replicator.core.model.loading import load_tokenizer, resolve_base
    from replicator.core.rows import DataContext
    from replicator.core.tokens.batches import Encoder

    resolved = resolve(args.recipe, [], overrides_for(args, length))
    stage = resolved.final
    plugins = build_plugins(stage.plugins, resolved.file, unused=stage.unused_hooks)
    cache = Path(tempfile.mkdtemp(prefix="train-throughput-"))
    ctx = DataContext(
        data_dir=data_dir(), seed=resolved.seed, stage=stage.name, cache_dir=cache, stage_outputs={}
    )
    train_rows, _ = collect_rows(plugins, ctx)
    if len(train_rows) < n_rows:
        raise SystemExit(f"{data_dir()}: {len(train_rows)} training rows, the benchmark needs {n_rows}")
    rows = sample_rows(train_rows, n_rows, resolved.seed)
    tokenizer = load_tokenizer(resolve_base(stage.model.base))
    enc = Encoder(plugins, tokenizer)
    ids = [[int(t) for t in enc(r, length)] for r in rows]
    return Setting(
        length,
        stage,
        plugins,
        rows,
        ids,
        resolved.seed,
        args.batch_size * args.grad_accum,
        args.batch_size,
        args.grad_accum,
    )


def fresh_model(s: Setting, stage=None):
    """The model as the project loads it, with the same LoRA initialisation for every trainer."""
    import torch

    from replicator.core.model.loading import load_model

    torch.manual_seed(s.seed)
    return load_model((stage or s.stage).model, s.plugins, train=True)


def token_budget_for(s: Setting) -> int:
    """The smallest padded-token budget whose epoch has no more micro-batches than the row-count
    trainers have optimizer steps (the same mean rows per optimizer step with ``grad_accum`` 1)."""
    from replicator.core.tokens.batches import token_budget_batches, units_of

    lengths = [len(i) for i in s.ids]
    target = math.ceil(len(s.rows) / s.rows_per_step)
    units = units_of(s.rows)

    def count(budget):
        return len(token_budget_batches(lengths, units, budget, random.Random(f"{s.seed}:0")))

    lo, hi = max(lengths), max(lengths) * s.rows_per_step * 4
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if count(mid) > target else (lo, mid)
    return lo


# ---------------------------------------------------------------- the trainers


def run_hf(s: Setting, strategy: str, warmup: int, cuda: bool, bf16: bool = False) -> dict:
    import inspect

    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    model, tokenizer, _ = fresh_model(s)
    t = s.stage.train
    data = [
        {"input_ids": ids, "labels": int(max(range(3), key=lambda k: r["label"][k]))}
        for ids, r in zip(s.ids, s.rows, strict=True)
    ]
    kw = dict(
        per_device_train_batch_size=s.batch_size,
        gradient_accumulation_steps=s.grad_accum,
        num_train_epochs=1,
        learning_rate=t.lr,
        lr_scheduler_type=t.schedule,
        warmup_steps=t.warmup_steps,
        max_grad_norm=t.max_grad_norm,
        weight_decay=t.weight_decay,
        adam_beta1=t.betas[0],
        adam_beta2=t.betas[1],
        adam_epsilon=t.eps,
        optim="adamw_torch",
        logging_strategy="no",
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        dataloader_num_workers=0,
        seed=s.seed,
        remove_unused_columns=False,
        disable_tqdm=True,
        use_cpu=not cuda,
        bf16=cuda or bf16,
    )
    if "train_sampling_strategy" in inspect.signature(TrainingArguments).parameters:
        kw["train_sampling_strategy"] = strategy
    else:  # transformers 4.x
        kw["group_by_length"] = strategy == "group_by_length"
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(
            model=model,
            args=TrainingArguments(output_dir=out, **kw),
            train_dataset=data,
            data_collator=DataCollatorWithPadding(tokenizer),
            processing_class=tokenizer,
        )
        with (
            Meter(model, cuda) as m,
            contextlib.redirect_stdout(sys.stderr),
        ):  # the Trainer prints its metrics
            trainer.train()
    res = m.result(warmup) | {"backbone_params": backbone_params(model)}
    del trainer, model
    return res


def run_ours(s: Setting, batch_tokens: int | None, warmup: int, cuda: bool, packed: bool = False) -> dict:
    """The project's trainer; with ``packed``, its padding-free micro-batches (``train.packed``) under
    flash attention (CUDA only: elsewhere packed rows cost masked attention over the whole pack)."""
    from replicator.core.train.trainer import train_stage

    stage = s.stage
    if batch_tokens:
        stage = dataclasses.replace(
            stage,
            train=dataclasses.replace(stage.train, batch_tokens=batch_tokens, grad_accum=1, packed=packed),
        )
    model, tokenizer, info = fresh_model(s, stage)
    if packed:
        (model.get_base_model() if hasattr(model, "get_base_model") else model).set_attn_implementation(
            "flash_attention_2"
        )
    with tempfile.TemporaryDirectory() as artifacts, Meter(model, cuda) as m:
        train_stage(stage, s.plugins, s.rows, model, tokenizer, info, Path(artifacts), s.seed, progress=False)
    res = m.result(warmup) | {"backbone_params": backbone_params(model)}
    if batch_tokens:
        res["batch_tokens"] = batch_tokens
    del model
    return res


def flash_attention_available() -> str | None:
    """Why the packed path cannot run here (None when it can)."""
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device"
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return "flash-attn is not installed (pip install flash-attn)"
    return None


# ---------------------------------------------------------------- the report


def run_one(args, name: str, length: int, steps: int) -> dict | None:
    """One trainer at one token budget, in this process (a child of :func:`main`): the matmul rate,
    then the trainer on a fresh model; None when the trainer cannot run here (said on stderr)."""
    import torch

    if name == "packed" and flash_attention_available():
        print(f"packed: not run ({flash_attention_available()})", file=sys.stderr)
        return None
    peak = ({"matmul_gflops": round(matmul_gflops(512 if args.quick else 2048, args.dtype), 1),
             "matmul_dtype": args.dtype} if not args.cuda else {})
    s = prepare(args, length, args.batch_size * args.grad_accum * (steps + args.warmup))
    budget = token_budget_for(s)
    if name == "hf_random":
        res = run_hf(s, "random", args.warmup, args.cuda, args.dtype == "bfloat16")
    elif name == "hf_grouped":
        res = run_hf(s, "group_by_length", args.warmup, args.cuda, args.dtype == "bfloat16")
    elif name == "ours_grouped":
        res = run_ours(s, None, args.warmup, args.cuda)
    elif name == "ours_tokens":
        res = run_ours(s, budget, args.warmup, args.cuda)
    else:
        res = run_ours(s, budget, args.warmup, args.cuda, packed=True)
    return {
        "trainer": name,
        "length": length,
        "model": args.model,
        "rows": len(s.rows),
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        **peak,
        **res,
    }


def run_length(args, length: int, steps: int) -> list[dict]:
    """Every trainer at ``length``, back to back, each in a fresh process (``--one``): no state of one
    (a process-wide allocator setting, memory not handed back) reaches the next, and the peak resident
    memory is its own."""
    import subprocess

    out = []
    for name in (t for t in TRAINERS if t in args.trainers):
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.train_throughput",
            "--one",
            name,
            "--lengths",
            str(length),
            "--steps",
            str(steps),
            "--warmup",
            str(args.warmup),
            "--batch-size",
            str(args.batch_size),
            "--grad-accum",
            str(args.grad_accum),
            "--recipe",
            args.recipe,
            "--dtype",
            args.dtype,
            "--model",
            args.model,
            *(["--quick"] if args.quick else []),
            *(["--cuda"] if args.cuda else []),
            *(["--threads", str(args.threads)] if args.threads else []),
            *(["--override", *args.override] if args.override else []),
        ]
        p = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        if p.returncode != 0:
            raise SystemExit(f"{name} at {length} tokens failed (exit {p.returncode}): {' '.join(cmd)}")
        lines = [x for x in p.stdout.splitlines() if x.startswith("{")]
        if not lines:
            continue  # said why on stderr
        res = json.loads(lines[-1])
        out.append(res)
        print(
            f"  {name} at {length}: {res['useful_tokens_per_s']} useful tokens/s, "
            f"{res['useful_tokens_per_cpu_s']} per CPU-second",
            file=sys.stderr,
            flush=True,
        )
    return out


def finish(results: list[dict], peak_gflops: float | None, peak_name: str) -> None:
    n_params = results[0]["backbone_params"]
    by = {(r["length"], r["trainer"]): r for r in results}
    for r in results:
        for ref in ("hf_random", "hf_grouped"):
            base = by.get((r["length"], ref))
            r[f"vs_{ref}"] = (
                round(r["useful_tokens_per_s"] / base["useful_tokens_per_s"], 3) if base else None
            )
            r[f"cpu_vs_{ref}"] = (
                round(r["useful_tokens_per_cpu_s"] / base["useful_tokens_per_cpu_s"], 3) if base else None
            )
        peak = r.get("matmul_gflops") or peak_gflops  # CPU: the matmul of the trainer's own process
        # 3 significant digits
        r["utilisation"] = float(f"{4 * n_params * r['useful_tokens_per_s'] / (peak * 1e9):.3g}")
        if peak_gflops:
            r[peak_name] = round(peak_gflops, 1)
        print(json.dumps(r), flush=True)
    head = (
        f"{'length':>6} {'trainer':<13} {'tok/s':>8} {'vs a':>6} {'vs b':>6} {'tok/cpu-s':>9} {'vs a':>6} "
        f"{'vs b':>6} {'pad %':>6} {'rows/st':>7} {'peak GiB':>8} {'+GiB':>6} {'util':>6}"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for r in results:
        gpu = r.get("peak_gpu_gib") is not None
        mem = r["peak_gpu_gib"] if gpu else r["peak_rss_gib"]
        grew = float("nan") if gpu else r["peak_rss_gib"] - r["rss_before_gib"]
        def ratio(key, r=r):  # "-" where the reference trainer was not run (--trainers)
            return f"{r[key]:>6.2f}" if r[key] is not None else f"{'-':>6}"

        cells = [
            f"{r['length']:>6} {r['trainer']:<13} {r['useful_tokens_per_s']:>8.1f}",
            f"{ratio('vs_hf_random')} {ratio('vs_hf_grouped')}",
            f"{r['useful_tokens_per_cpu_s']:>9.1f} {ratio('cpu_vs_hf_random')}",
            f"{ratio('cpu_vs_hf_grouped')} {100 * r['padding_share']:>6.1f}",
            f"{r['rows_per_step']:>7.2f}",
            f"{mem:>8.2f} {grew:>6.2f} {r['utilisation']:>6.3f}",
        ]
        print(" ".join(cells))
    what = (
        f"{peak_gflops:.1f} GFLOP/s ({peak_name})"
        if peak_gflops
        else f"the 2048^3 {results[0].get('matmul_dtype', 'float32')} matmul GFLOP/s "
        f"of the trainer's process ({', '.join(str(r['matmul_gflops']) for r in results)})"
    )
    print(
        f"\nutil = 4 x {n_params:,} backbone params x useful tokens/s / {what}; "
        "a = hf_random, b = hf_grouped; tok/cpu-s: per CPU-second of this process; +GiB: peak RSS over the "
        "RSS when the trainer started (its model loaded)",
        flush=True,
    )


def gemma2_folder(shape: str, tok_path: str) -> str:
    """A Gemma-2 sequence classifier of ``shape`` with random weights, saved with a tokenizer (bf16)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Gemma2Config

    tokenizer = AutoTokenizer.from_pretrained(tok_path)
    cfg = Gemma2Config(
        **GEMMA2_SHAPES[shape],
        vocab_size=len(tokenizer),
        num_labels=3,
        pad_token_id=tokenizer.pad_token_id,
        architectures=["Gemma2ForSequenceClassification"],
    )
    folder = Path(tempfile.gettempdir()) / f"train-throughput-{shape}"
    if not (folder / "config.json").exists():
        torch.manual_seed(0)
        with torch.device("cuda"):
            model = AutoModelForSequenceClassification.from_config(cfg, dtype=torch.bfloat16)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        del model
        torch.cuda.empty_cache()
    return str(folder)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny:llama, 64/128 tokens, 2 timed steps: a check")
    p.add_argument("--cuda", action="store_true", help="CUDA, bf16, Gemma-2-2B and 9B shapes, MFU")
    p.add_argument("--recipe", default=str(RECIPE))
    p.add_argument(
        "--model", default=None, help="model.base (default embedded:gemma-3-270m; --quick tiny:llama)"
    )
    p.add_argument("--lengths", type=int, nargs="+", default=None, help="token budgets per row (256 1024)")
    p.add_argument(
        "--steps", type=int, nargs="+", default=None, help="timed optimizer steps per length (12 4)"
    )
    p.add_argument("--warmup", type=int, default=None, help="untimed optimizer steps per trainer (2)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                   help="model.dtype of both trainers and the peak matmul (CPU: float32; --cuda: bf16)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--trainers", nargs="+", default=list(TRAINERS), choices=TRAINERS)
    p.add_argument(
        "--override", nargs="*", default=[], help="more recipe overrides a.b=value for every trainer"
    )
    p.add_argument("--one", choices=TRAINERS, help=argparse.SUPPRESS)  # a child: one trainer, one length
    args = p.parse_args(argv)
    args.dtype = args.dtype or ("bfloat16" if args.cuda else "float32")
    quick = args.quick
    args.lengths = args.lengths or ([64, 128] if quick else [256, 1024])
    args.model = args.model or ("tiny:llama" if quick else None if args.cuda else "embedded:gemma-3-270m")
    args.steps = args.steps or ([2] if quick else [12, 4])
    args.warmup = args.warmup if args.warmup is not None else (1 if quick else 2)
    if len(args.steps) == 1:
        args.steps = args.steps * len(args.lengths)
    if len(args.steps) != len(args.lengths):
        p.error("--steps: one value, or one per length")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        res = run_one(args, args.one, args.lengths[0], args.steps[0])
        if res is not None:
            print(json.dumps(res), flush=True)
        return
    if args.cuda:
        if not torch.cuda.is_available():
            raise SystemExit("--cuda: no CUDA device here (torch.cuda.is_available() is False)")
        from replicator.core.model.loading import resolve_base

        shapes = [args.model] if args.model else list(GEMMA2_SHAPES)
        peak_name = "bf16_peak_gflops"
        name = torch.cuda.get_device_name(0)
        table = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)
        peak = table * 1e3 if table else matmul_gflops(8192, "bfloat16")
        if table is None:
            print(f"{name}: no bf16 peak on file, MFU against a measured 8192^3 bf16 matmul", file=sys.stderr)
        tok_path = resolve_base("embedded:gemma-3-270m")
        for shape in shapes:
            args.model = gemma2_folder(shape, tok_path) if shape in GEMMA2_SHAPES else shape
            torch.cuda.empty_cache()
            results = [
                r
                for length, steps in zip(args.lengths, args.steps, strict=True)
                for r in run_length(args, length, steps)
            ]
            print(f"\n== {shape} on {name} (bf16) ==")
            finish(results, peak, peak_name)
        return

    print(cpu_line(), file=sys.stderr, flush=True)
    t0 = time.time()
    results = [
        r
        for length, steps in zip(args.lengths, args.steps, strict=True)
        for r in run_length(args, length, steps)
    ]
    print(f"benchmark {time.time() - t0:.0f} s", file=sys.stderr)
    finish(results, None, "matmul_gflops")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
