"""The training loop (core/train/trainer.py): epoch schedules, the step gradient over micro-batches of
varying row counts, optimizers and schedules as the write-ups had them, precision checks, and the
process share of a step."""

from __future__ import annotations

import contextlib
import random
from types import SimpleNamespace

import pytest

from replicator.core.config.recipe import resolve
from replicator.core.tokens.batches import length_grouped_batches, token_budget_batches, units_of

from ..conftest import RECIPES, tiny_classifier
from ..helpers import _rows_and_lengths


def _groups(recipe: str, toggles=(), overrides=()):
    from replicator.core.config.catalogue import build_plugins
    from replicator.core.model.loading import load_model
    from replicator.core.train.trainer import _param_groups

    r = resolve(RECIPES / recipe, list(toggles), list(overrides), check_plugins=False)
    model, _, info = load_model(r.final.model, build_plugins(r.final.plugins, "x"))
    return r, model, _param_groups(model, r.final.train, info["head"])


def test_16th_learning_rate_is_the_write_ups():
    """[P16]: lr 2e-4 for the adapters and the head; peft scales the adapter's output by alpha / r itself.
    The optimizer's learning rate times LoRA's scaling is the write-up's effective rate, not 256x less."""
    r = resolve(RECIPES / "16th.yaml", check_plugins=False)
    assert r.final.train.lr == r.final.train.head_lr == 2.0e-4
    r, model, groups = _groups("16th.yaml", ["tiny"], ["model.lora.r=16", "model.lora.alpha=4"])
    assert [g["lr"] for g in groups] == [2.0e-4, 3.0e-3]  # the tiny toggle's head lr; the backbone keeps lr
    lora = model.peft_config["default"]
    scaling = {m.scaling["default"] for m in model.modules() if isinstance(getattr(m, "scaling", None), dict)}
    assert scaling == {lora.lora_alpha / lora.r} == {0.25}


def _bf16_full_model():
    import torch

    from replicator.core.config.catalogue import build_plugins
    from replicator.core.model.loading import load_model

    r = resolve(RECIPES / "2nd.yaml", ["tiny"], ["model.dtype=bfloat16"], check_plugins=False)
    plugins = build_plugins(r.stages[0].plugins, "x")
    torch.manual_seed(0)
    model, _, info = load_model(r.stages[0].model, plugins)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    return r, model, info


def _steps(model, optimizer, n: int = 20):
    import torch

    torch.manual_seed(1)
    for _ in range(n):
        for p in model.parameters():
            p.grad = torch.randn_like(p, dtype=torch.float32).to(p.dtype)
        optimizer.step()


def test_plain_adamw_on_bf16_weights_is_refused():
    from replicator.core.errors import ReplicatorError
    from replicator.core.train.trainer import check_precision

    r, model, _ = _bf16_full_model()
    import dataclasses

    with pytest.raises(ReplicatorError, match="adamw_kahan"):
        check_precision(model, dataclasses.replace(r.stages[0].train, optimizer="adamw"))
    check_precision(model, r.stages[0].train)  # the recipe's adamw_kahan passes


def test_bf16_full_fine_tuning_at_2nd_lr_moves_the_weights():
    """20 AdamW steps at lr 2.5e-6 on bf16 weights: plain AdamW leaves most weights bit-identical (the
    bug); the recipe's Kahan-summed AdamW tracks the fp32 trajectory (weights + compensation)."""
    import dataclasses

    import torch

    from replicator.core.train.trainer import build_optimizer

    r, model, _ = _bf16_full_model()
    tcfg = dataclasses.replace(r.stages[0].train, lr=2.5e-6)
    assert tcfg.optimizer == "adamw_kahan" and tuple(tcfg.betas) == (0.9, 0.99) and tcfg.eps == 1e-6
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    ref = {n: torch.nn.Parameter(p.float()) for n, p in start.items()}
    plain = {n: torch.nn.Parameter(p.clone()) for n, p in start.items()}

    kahan = build_optimizer([{"params": list(model.parameters())}], tcfg)
    _steps(model, kahan)
    ref_model = torch.nn.ParameterList(ref.values())
    _steps(ref_model, torch.optim.AdamW(ref_model, lr=2.5e-6, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.01))
    plain_model = torch.nn.ParameterList(plain.values())
    _steps(plain_model,
           torch.optim.AdamW(plain_model, lr=2.5e-6, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.01))

    big = [n for n, p in start.items() if p.numel() > 1000]
    total = sum(start[n].numel() for n in big)
    moved_plain = sum((plain[n] != start[n]).sum().item() for n in big) / total
    err_plain = max((plain[n].float() - ref[n]).abs().max().item() for n in big)
    err_kahan = 0.0
    for n, p in model.named_parameters():
        if n in big:
            eff = p.detach().float() + kahan.state[p]["kahan_comp"].float()
            err_kahan = max(err_kahan, (eff - ref[n]).abs().max().item())
    move = max((ref[n] - start[n].float()).abs().max().item() for n in big)
    assert moved_plain < 0.25, moved_plain  # plain bf16 AdamW: most updates rounded away
    assert err_plain > 0.5 * move  # ... so it ends far from the fp32 trajectory
    assert err_kahan < 0.05 * move, (err_kahan, move)  # Kahan keeps what rounding dropped


def test_fp32_master_weights_with_bf16_autocast_move():
    """The other way: fp32 weights (``model.dtype: float32``) with accelerate's bf16 mixed precision."""
    import torch
    from accelerate import Accelerator

    from replicator.core.config.catalogue import build_plugins
    from replicator.core.model.loading import load_model
    from replicator.core.train.trainer import build_optimizer, check_precision

    r = resolve(RECIPES / "2nd.yaml", ["tiny"], ["model.dtype=float32", "train.mixed_precision=bf16",
                                                 "train.optimizer=adamw", "train.lr=2.5e-6"],
                check_plugins=False)
    stage = r.stages[0]
    model, tok, _ = load_model(stage.model, build_plugins(stage.plugins, "x"))
    check_precision(model, stage.train)  # fp32 weights: a plain AdamW is fine
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    acc = Accelerator(cpu=True, mixed_precision=stage.train.mixed_precision)
    opt = build_optimizer([{"params": [p for p in model.parameters() if p.requires_grad]}], stage.train)
    model, opt = acc.prepare(model, opt)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = torch.randint(3, 50, (4, 16))
    seen = []
    mlp = next(m for n, m in model.named_modules() if n.endswith("layers.0.mlp.up_proj"))
    mlp.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    with acc.autocast():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert seen == [torch.bfloat16]  # bf16 compute (accelerate hands the outputs back in fp32)
    acc.backward(torch.nn.functional.cross_entropy(logits.float(), torch.tensor([0, 1, 2, 0])))
    opt.step()
    moved = [n for n, p in model.named_parameters() if p.dtype == torch.float32 and (p != start[n]).any()]
    assert len(moved) > 0.9 * len(start)


def test_2nd_stages_and_schedule_are_the_originals():
    from replicator.core.train.trainer import lr_factor

    r = resolve(RECIPES / "2nd.yaml", check_plugins=False)
    s = {st.name: st for st in r.stages}
    assert s["stage1"].from_stage is None
    assert s["stage2"].from_stage is None  # [R2]: stage 2 starts from the base model
    assert s["stage3"].from_stage == "stage2"
    t = s["stage1"].train
    assert (t.optimizer, t.lr_floor, t.warmup_ratio, t.schedule, t.max_grad_norm) == \
        ("adamw_kahan", 0.001, 0.1, "linear", 0)
    f = [lr_factor(k, total=100, warmup=10, schedule="linear", floor=0.001) for k in range(101)]
    assert f[0] == pytest.approx(0.001) and f[10] == pytest.approx(1.0) and f[100] == pytest.approx(0.001)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))
    c = [lr_factor(k, total=100, warmup=0, schedule="cosine", floor=0.0) for k in (0, 50, 100)]
    assert c == pytest.approx([1.0, 0.5, 0.0])


def test_scheduler_uses_warmup_ratio():
    import dataclasses

    import torch

    from replicator.core.train.trainer import build_scheduler

    r = resolve(RECIPES / "2nd.yaml", check_plugins=False)
    tcfg = dataclasses.replace(r.stages[0].train, lr=1.0)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, tcfg, steps=50)
    lrs = []
    for _ in range(50):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.001) and max(lrs) == pytest.approx(1.0) and lrs.index(max(lrs)) == 5


def test_3rd_optimizers_are_the_originals():
    from replicator.core.errors import ReplicatorError
    from replicator.core.train.trainer import build_optimizer

    r = resolve(RECIPES / "3rd.yaml", check_plugins=False)
    assert r.final.train.optimizer == "paged_adamw_8bit"  # [R3m]
    assert resolve(RECIPES / "3rd.yaml", ["raja"], check_plugins=False).final.train.optimizer == "adamw_8bit"
    import torch

    if torch.cuda.is_available():
        pytest.skip("the CPU error only")
    with pytest.raises(ReplicatorError, match="need a CUDA GPU"):
        build_optimizer([{"params": [torch.nn.Parameter(torch.zeros(2))]}], r.final.train)


def test_accelerates_own_sharding_launchers_are_refused():
    """The runner shards FSDP itself (core/model/sharding.py, tests/end_to_end/test_fsdp.py): accelerate's
    FSDP plugin would wrap the model again, and under DeepSpeed ZeRO each process would save its shards as
    the model."""
    from accelerate.utils import DistributedType

    from replicator.core.errors import ReplicatorError
    from replicator.core.train.trainer import check_parallel

    for kind in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        with pytest.raises(ReplicatorError,
                           match="shards the model itself.*recipes/accelerate/multi_gpu.yaml"):
            check_parallel(kind)
    for kind in (DistributedType.NO, DistributedType.MULTI_GPU, DistributedType.MULTI_CPU):
        check_parallel(kind)


class _Plugins:
    def chain(self, hook, key, rows, **kw):
        return rows


def _stage(**train):
    from replicator.core.config.recipe import TrainConfig

    return SimpleNamespace(name="main", train=TrainConfig(**train))


def test_plan_uses_the_token_budget_only_when_set():
    from replicator.core.train.trainer import epoch_schedule

    rows, lengths = _rows_and_lengths()
    rows = [dict(r, n=n) for r, n in zip(rows, lengths, strict=True)]

    class encoder:  # noqa: N801  (what epoch_schedule() asks of an Encoder)
        def __new__(cls, row, max_length):
            return [0] * min(row["n"], max_length)

        @staticmethod
        def prepare(rows, max_length):
            pass

    cut = [min(n, 256) for n in lengths]
    epochs, micro, bounds = epoch_schedule(
        rows, _stage(batch_size=4, grad_accum=2, max_length=256), _Plugins(), encoder, 7
    )
    assert epochs[0][1] == length_grouped_batches(cut, units_of(rows), 4, random.Random("7:0"))
    assert len(bounds) - 1 == -(-len(micro) // 2)
    epochs, micro, bounds = epoch_schedule(
        rows, _stage(batch_tokens=1024, grad_accum=2, max_length=256), _Plugins(), encoder, 7, n_processes=2
    )
    assert epochs[0][1] == token_budget_batches(cut, units_of(rows), 1024, random.Random("7:0"))
    assert len(bounds) - 1 == -(-len(micro) // 4)


@pytest.mark.parametrize("train", [{"batch_size": 4}, {"batch_size": 3}, {"batch_tokens": 1024}],
                         ids=["micro4", "micro3", "token_budget"])
def test_a_global_batch_gives_the_same_rows_per_step_and_steps_on_1_2_and_8_processes(train):
    """``train.global_batch`` is rows per optimizer step whatever the process count: 1, 2 and 8 processes
    split it into micro-batches and accumulation of their own, and take the same steps; without it the
    rows per step grow with the processes (what the recipes did before)."""
    from replicator.core.train.trainer import epoch_schedule

    rows, lengths = _rows_and_lengths()
    rows = [dict(r, n=n) for r, n in zip(rows, lengths, strict=True)]

    class encoder:  # noqa: N801
        def __new__(cls, row, max_length):
            return [0] * min(row["n"], max_length)

        @staticmethod
        def prepare(rows, max_length):
            pass

    seen = {}
    for n in (1, 2, 8):
        _, micro, bounds = epoch_schedule(rows, _stage(global_batch=16, max_length=256, **train), _Plugins(),
                                          encoder, 7, n_processes=n)
        per_step = [sum(len(b) for _, b in micro[a:z]) for a, z in zip(bounds, bounds[1:], strict=False)]
        assert sum(per_step) == len(rows)
        if "batch_tokens" not in train:  # a micro-batch keeps a row's units together: at most its rows
            assert max(per_step) <= 16 and sum(per_step[:-1]) / (len(per_step) - 1) > 12, per_step
        else:  # steps fill to at least 16 rows
            assert min(per_step[:-1]) >= 16
        seen[n] = len(bounds) - 1
    assert len(set(seen.values())) == 1, seen
    grows = {n: len(epoch_schedule(rows, _stage(batch_size=4, grad_accum=2, max_length=256), _Plugins(),
                                   encoder, 7, n_processes=n)[2]) - 1 for n in (1, 8)}
    assert grows[8] < grows[1]


def _tiny_classifier():
    model = tiny_classifier()  # eval: no dropout, the same function in every pass
    model.config._attn_implementation = "eager"
    return model


def _grads(model):
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


def _micro_loss(model, seqs, labels):
    import torch

    from replicator.core.tokens.batches import collate, forward_logits

    ids, mask = collate(seqs, 0, "cpu")
    logits = forward_logits(model, ids, mask)
    return torch.nn.functional.cross_entropy(logits, torch.tensor(labels))  # a mean over the rows


def _run_step(model, seqs, labels, everyone, rank, n, by_rows):
    from replicator.core.train.trainer import _step

    class Acc:
        process_index, num_processes = rank, n

        @staticmethod
        def backward(loss):
            loss.backward()

        @staticmethod
        def no_sync(m):
            return contextlib.nullcontext()

    def run_micro(e, batch, scale):
        loss = _micro_loss(model, [seqs[i] for i in batch], [labels[i] for i in batch]) * scale
        loss.backward()
        return loss.item()

    import replicator.core.train.trainer as trainer

    loop = SimpleNamespace(acc=Acc, model=model)
    real = trainer.all_sum
    trainer.all_sum = lambda v: v  # one process here; the test adds the processes' parts itself
    try:
        value = _step(loop, everyone, 0, 1, run_micro, by_rows=by_rows)
    finally:
        trainer.all_sum = real
    return value, _grads(model)


def test_step_gradient_with_uneven_micro_batches_is_the_mean_over_rows_in_one_and_two_processes():
    import torch

    model = _tiny_classifier()
    rng = random.Random(0)
    seqs = [[rng.randint(1, 49) for _ in range(rng.randint(3, 12))] for _ in range(9)]
    labels = [rng.randint(0, 2) for _ in seqs]
    everyone = [(0, [0, 1, 2, 3, 4]), (0, [5]), (0, [6, 7]), (0, [8])]  # 5, 1, 2 and 1 rows

    whole = _micro_loss(model, seqs, labels)
    whole.backward()
    ref = _grads(model)

    loss1, g1 = _run_step(model, seqs, labels, everyone, 0, 1, by_rows=True)
    assert abs(loss1 - whole.item()) < 1e-5
    for k in ref:
        torch.testing.assert_close(g1[k], ref[k], atol=1e-6, rtol=1e-5)
    # the old weighting (each micro-batch alike) is not the mean over rows here: the test can fail
    _, g_old = _run_step(model, seqs, labels, everyone, 0, 1, by_rows=False)
    assert any(not torch.allclose(g_old[k], ref[k], atol=1e-4) for k in ref)

    # two processes: each runs its share (weight-0 repeats included); DDP averages their gradients
    parts = [_run_step(model, seqs, labels, everyone, r, 2, by_rows=True) for r in range(2)]
    assert abs(sum(p[0] for p in parts) - whole.item()) < 1e-5  # each part is its total / n: all_sum
    for k in ref:
        torch.testing.assert_close((parts[0][1][k] + parts[1][1][k]) / 2, ref[k], atol=1e-6, rtol=1e-5)


def test_step_scales_without_a_budget_are_the_old_ones():
    from replicator.core.train.trainer import step_scales

    step = [(0, [1, 2, 3, 4]), (0, [5, 6]), (0, [7, 8, 9])]
    assert step_scales(step, 2, by_rows=False) == [2 / 3] * 3
    assert step_scales(step, 1, by_rows=True) == [4 / 9, 2 / 9, 3 / 9]


MALLINFO = """
import ctypes, sys, torch
from replicator.core.train.trainer import keep_freed_memory
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usmblks \
fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
before = libc.mallinfo2()
x = torch.ones(16 * 2**20)  # 64 MB, as a training step's activations
live = libc.mallinfo2()
del x
freed = libc.mallinfo2()
print(applied, live.hblkhd - before.hblkhd, live.arena, freed.arena)
"""


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="a glibc allocator setting")
def test_freed_memory_stays_in_the_heap():
    """What keep_freed_memory sets, read from glibc's own accounting (mallinfo2): big tensors come from
    the heap, not from fresh mmaps, and freeing one does not trim the heap. Page-fault counts would
    show the effect too, but they also depend on the host (a VM's kernel may reclaim idle pages), so
    they are the benchmark's business, not a test's."""
    import subprocess
    import sys

    def info(mode):
        out = subprocess.run([sys.executable, "-c", MALLINFO, mode], capture_output=True, text=True,
                             check=True)
        applied, *sizes = out.stdout.split()
        return (applied, *map(int, sizes))

    mb = 2**20
    applied, mapped, live_heap, freed_heap = info("keep")
    assert applied == "True"
    assert mapped < mb and live_heap >= 64 * mb and freed_heap == live_heap
    applied, mapped, live_heap, freed_heap = info("default")
    assert applied == "None" and mapped >= 64 * mb  # glibc's default: a fresh mmap, unmapped when freed


def test_share_gives_every_process_the_same_number_of_passes():
    from replicator.core.train.trainer import share

    step = ["m0", "m1", "m2"]
    parts = [share(step, r, 2) for r in range(2)]
    assert [len(p) for p in parts] == [2, 2]
    real = sorted(k for p in parts for k, _, w in p if w == 1.0)
    assert real == [0, 1, 2] and [w for _, _, w in parts[1]] == [1.0, 0.0]
    assert share(step, 0, 1) == [(0, "m0", 1.0), (1, "m1", 1.0), (2, "m2", 1.0)]
    assert [w for _, _, w in share(["m0"], 1, 2)] == [0.0]  # a process with nothing real still takes part
