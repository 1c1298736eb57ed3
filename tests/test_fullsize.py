"""What would go wrong at full size, caught on tiny models: each test fails on the bug it names.

* 16th: one learning rate for adapters and head; LoRA's alpha / r scaling is peft's, not the optimizer's.
* 2nd: a bf16 full fine-tuning step at lr 2.5e-6 moves the weights (Kahan-summed AdamW, or fp32 master
  weights through accelerate's mixed precision); a plain bf16 AdamW is refused. Stage 2 starts from the
  base model, stage 3 from stage 2; the schedule warms up from and decays to 0.001x.
* 3rd: a reward-model checkpoint with a 1-output head loads as a 3-way classifier with a new head and
  its backbone intact; the paged 8-bit optimizer is the recipe's and fails clearly without CUDA.
* 1st: the teachers label the student's rows in the precision they trained in; only the student predicts
  in 8-bit; the student keeps its best evaluated checkpoint.
"""

from __future__ import annotations

import math

import pytest

from replicator.core.config.recipe import resolve

from .conftest import RECIPES

TINY = ["model.base=tiny:llama", "model.lora={r: 4, alpha: 8}", "train.batch_size=8", "train.max_length=64",
        "predict.max_length=64", "predict.batch_tokens=512", "train.warmup_steps=0"]


def _groups(recipe: str, toggles=(), overrides=()):
    from replicator.core.config.catalogue import build_plugins
    from replicator.core.model.loading import load_model
    from replicator.core.train.trainer import _param_groups

    r = resolve(RECIPES / recipe, list(toggles), list(overrides), check_plugins=False)
    model, _, info = load_model(r.final.model, build_plugins(r.final.plugins, "x"))
    return r, model, _param_groups(model, r.final.train, info["head"])


# ---------------------------------------------------------------- 16th: one learning rate


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


# ---------------------------------------------------------------- 2nd: 16-bit full fine-tuning


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


# ---------------------------------------------------------------- 3rd: reward-model backbone, 8-bit optimizer


def test_one_output_reward_checkpoint_loads_as_three_way_classifier(tmp_path, caplog):
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from replicator.core.config.catalogue import build_plugins
    from replicator.core.model.loading import load_model, resolve_base
    from replicator.core.model.tiny import _tokenizer

    src = resolve_base("tiny:gemma2")
    config = AutoConfig.from_pretrained(src, num_labels=1)
    torch.manual_seed(3)
    reward = AutoModelForSequenceClassification.from_config(config)
    reward.save_pretrained(tmp_path / "rm")
    _tokenizer().save_pretrained(tmp_path / "rm")
    r = resolve(RECIPES / "3rd.yaml", ["tiny"], [f"model.base={tmp_path / 'rm'}"], check_plugins=False)
    with caplog.at_level("INFO"):
        model, _, info = load_model(r.final.model, build_plugins(r.final.plugins, "x"))
    assert "1 output(s); a new 3-way head" in caplog.text
    head = model.base_model.model.score
    weight = getattr(head, "modules_to_save", {"default": head})["default"].weight
    assert weight.shape == (3, config.hidden_size)
    saved = reward.model.layers[0].mlp.up_proj.weight
    mine = model.base_model.model.model.layers[0].mlp.up_proj.base_layer.weight
    assert torch.equal(saved, mine)  # the backbone is the checkpoint's, not re-initialised


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


# ---------------------------------------------------------------- 1st: teachers' precision, best checkpoint


def test_1st_only_the_student_predicts_in_8bit():
    r = resolve(RECIPES / "1st.yaml", check_plugins=False)
    for s in r.stages:
        assert s.predict.load_in_8bit == (s.name == "student"), s.name
        if s.outputs:  # teachers: trained and predicting in 4-bit
            assert s.model.load_in_4bit
    assert r.final.train.eval_every == 400


def test_stage_outputs_come_from_the_model_as_trained(rich_data_dir, tmp_path, monkeypatch):
    """A teacher stage with 8-bit inference writes its outputs (the logits later stages learn from)
    before the model is reloaded in 8-bit: in the precision it trained in."""
    from replicator.core.run import pipeline

    monkeypatch.setenv("REPLICATOR_REPORTS", str(tmp_path / "reports"))
    monkeypatch.setenv("REPLICATOR_ARTIFACTS", str(tmp_path / "artifacts"))
    events = []
    from replicator.core.model import inference as model_module

    real_outputs, real_load = pipeline.write_stage_outputs, model_module.load_for_inference

    def outputs(*a, **k):
        events.append("outputs")
        return real_outputs(*a, **k)

    def reload(cfg, plugins, weights, load_in_8bit=False, merge_lora=False, calibration=None):
        events.append("reload-8bit")
        return real_load(cfg, plugins, weights, load_in_8bit=False)

    monkeypatch.setattr(pipeline, "write_stage_outputs", outputs)
    monkeypatch.setattr("replicator.core.model.inference.load_for_inference", reload)  # via load_predictor
    r = resolve(RECIPES / "smoke.yaml", [], TINY + [
        "train.max_steps=1", "stages={teacher: {outputs: [train], predict: {load_in_8bit: true}}, "
        "student: {plugins: {loss: {use: distill_kl_cos, teachers: [teacher]}}}}"], data_dir=rich_data_dir)
    pipeline.run_recipe(r, rich_data_dir, progress=False)
    assert events[:2] == ["outputs", "reload-8bit"]


def test_eval_every_keeps_the_best_weights(rich_data_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from replicator.core.run import pipeline

    monkeypatch.setenv("REPLICATOR_REPORTS", str(tmp_path / "reports"))
    monkeypatch.setenv("REPLICATOR_ARTIFACTS", str(tmp_path / "artifacts"))
    r = resolve(RECIPES / "smoke.yaml", [], TINY + ["train.eval_every=2", "train.max_steps=3",
                                                    "train.lr=0.05"], data_dir=rich_data_dir)
    run_dir, m, _ = pipeline.run_recipe(r, rich_data_dir, progress=False)
    evals = m["stages"]["main"]["evals"]
    assert [s for s, _ in evals] == [2, 3]
    best_step, best = min(evals, key=lambda e: e[1])
    assert m["best_step"] == best_step and math.isclose(m["best_valid_log_loss"], best)
    sart = tmp_path / "artifacts" / r.name / run_dir.name / "main"
    # steps.py
    best_file = next((tmp_path / "artifacts" / r.name / "steps").glob("main-train-*/best.safetensors"))
    final, kept = load_file(str(sart / "final.safetensors")), load_file(str(best_file))
    assert final.keys() == kept.keys() and all((final[k] == kept[k]).all() for k in final)
    assert math.isclose(m["log_loss"], best, rel_tol=1e-5)  # the evaluated model is the kept one


# ---------------------------------------------------------------- every tiny toggle on the shared data


@pytest.mark.real_data
@pytest.mark.parametrize("recipe", ["1st", "2nd", "3rd", "5th", "9th", "16th"])
def test_tiny_toggle_finds_its_data_in_the_shared_folder(recipe):
    """The shared data folder as it is (no competition test.csv): each tiny toggle's sources are there."""
    from replicator.core.data.files import data_dir

    resolve(RECIPES / f"{recipe}.yaml", ["tiny"], data_dir=data_dir())


# ---------------------------------------------------------------- 9th: LoRA merged, then 8-bit


def test_lora_merged_before_8bit_inference(tmp_path):
    """[P9]: merge_and_unload() then 8-bit. The merged 8-bit model has no adapters left and predicts what
    the fp32 model with adapters predicts, up to int8 rounding."""
    pytest.importorskip("bitsandbytes")
    import torch
    from safetensors.torch import save_file

    from replicator.core.config.catalogue import build_plugins
    from replicator.core.model.inference import load_for_inference
    from replicator.core.model.loading import load_model
    from replicator.core.model.tensors import trainable_state

    r = resolve(RECIPES / "9th.yaml", ["tiny"], ["model.base=tiny:llama128", "predict.load_in_8bit=true"],
                check_plugins=False)
    assert r.final.predict.merge_lora
    plugins = build_plugins(r.final.plugins, "x")
    torch.manual_seed(0)
    model, tok, _ = load_model(r.final.model, plugins, train=False)
    for n, p in model.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.05)  # trained adapters: B is zero at init
    save_file(trainable_state(model), str(tmp_path / "final.safetensors"))
    ids = torch.randint(4, 60, (3, 24))
    model.eval()  # no LoRA dropout
    with torch.no_grad():
        want = torch.softmax(model(input_ids=ids).logits.float(), -1)
    merged, _ = load_for_inference(r.final.model, plugins, tmp_path / "final.safetensors", load_in_8bit=True,
                                   merge_lora=True)
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    assert any(p.dtype == torch.int8 for p in merged.parameters())
    with torch.no_grad():
        got = torch.softmax(merged(input_ids=ids).logits.float(), -1)
    assert (got - want).abs().max().item() < 0.05
    assert len(list(tmp_path.glob("merged-*"))) == 1


# ---------------------------------------------------------------- data builders: pools from several labellers


def test_pool_labels_are_the_mean_of_several_labellers(tmp_path):
    """2nd [R2]: the stage-2 pseudo-labels are the mean of three stage-1 models' predictions."""
    from replicator.core.errors import ReplicatorError
    from replicator.core.rows import DataContext, make_row
    from replicator.plugins.pseudo_labels import PseudoLabels

    pool = [make_row(f"pool-{i}", [f"question {i}"], ["a"], ["b"]) for i in range(3)]
    rows = [{k: v for k, v in r.items() if k != "label"} for r in pool]
    outs = {"m0": {"pool": {"pool-0": [0.6, 0.2, 0.2], "pool-1": [0.1, 0.8, 0.1], "pool-2": [0.3, 0.3, 0.4]},
                   "pool_rows": rows},
            "m1": {"pool": {"pool-0": [0.2, 0.6, 0.2], "pool-1": [0.1, 0.6, 0.3], "pool-2": [0.2, 0.2, 0.6]},
                   "pool_rows": rows}}
    ctx = DataContext(tmp_path, 0, stage="stage2", stage_outputs=outs)
    got = {r["id"]: r["label"] for r in PseudoLabels(from_stage=["m0", "m1"]).data_sources("train", ctx)}
    assert (got["pool-0"] == pytest.approx([0.4, 0.4, 0.2])
            and got["pool-2"] == pytest.approx([0.25, 0.25, 0.5]))
    one = {r["id"]: r["label"] for r in PseudoLabels(from_stage="m0").data_sources("train", ctx)}
    assert one["pool-0"] == pytest.approx([0.6, 0.2, 0.2])
    del outs["m1"]["pool"]["pool-1"]
    with pytest.raises(ReplicatorError, match="stage 'm1' has no pool prediction for row pool-1"):
        PseudoLabels(from_stage=["m0", "m1"]).data_sources("train", ctx)
    assert PseudoLabels(from_stage=["m0", "m1"]).data_sources("train",
                                                              DataContext(tmp_path, 0, stage="m1")) is None


def test_judge_prompt_without_room_for_the_conversation_warns(caplog):
    """2nd's judge instruction + template take ~227 Gemma tokens: a budget below that shows every row as
    the same instruction (a smoke run at 192 tokens did). It is a warning naming the fix."""
    from replicator.core.lib import truncation as tr
    from replicator.core.model.loading import load_tokenizer, resolve_base
    from replicator.core.rows import make_row
    from replicator.plugins.judge_pab import (
        MIN_CONVERSATION,
        PAB_END,
        PAB_START,
        JudgePAB,
        JudgePAPB,
        judge_wrap,
    )

    tok = load_tokenizer(resolve_base("tiny:gemma2"))
    head, tail = judge_wrap(tok, tr.encoder(tok), PAB_START, PAB_END, False)
    fixed = len(head) + len(tail)
    row = make_row("1", ["what is the answer"], ["the answer is one"], ["two"])
    with caplog.at_level("WARNING"):
        JudgePAB().prompt_format(row=row, tokenizer=tok, max_length=fixed + 5)
    assert f"take {fixed} tokens, so max_length {fixed + 5} leaves 5" in caplog.text
    assert f"at least {fixed + MIN_CONVERSATION}" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        JudgePAPB().prompt_format(row=row, tokenizer=tok, max_length=fixed + 6)
        JudgePAB().prompt_format(row=row, tokenizer=tok, max_length=fixed + 64)
    assert caplog.text.count("judge prompt") == 1  # PAPB's short budget warns; a budget with room does not


# ---------------------------------------------------------------- 2nd: PAB + PAPB copies in stage 1


def test_2nd_stage1_trains_on_pab_and_papb_copies_in_one_step():
    """[P2] multi-format augmentation (stage 1 only): each sample as PAB and as PAPB, each with its swap, the
    four rows in one micro-batch unit (one ``pair`` key) [R2]; prediction is PAB; stages 2-3 are PAB only."""
    from replicator.core.config.catalogue import build_plugins
    from replicator.core.model.loading import load_tokenizer, resolve_base
    from replicator.core.rows import make_row
    from replicator.core.tokens.batches import units_of
    from replicator.plugins.judge_pab import JudgePAB, JudgePAPB

    r = resolve(RECIPES / "2nd.yaml", check_plugins=False)
    s = {st.name: st for st in r.stages}
    assert {n: s[n].plugins["prompt"]["use"] for n in s} == {
        "stage1": "judge_multi", "stage1_27b": "judge_multi", "stage1_armorm": "judge_multi",
        "stage2": "judge_pab", "stage3": "judge_pab"}
    assert s["stage1_armorm"].plugins["prompt"]["system_role"]
    plugins = build_plugins(s["stage1"].plugins, r.file)
    rows = [make_row(str(i), [f"question {i}"], [f"answer a {i}"], [f"answer b {i}"], label=[1, 0, 0])
            for i in range(3)]
    out = plugins.chain("augment", "rows", rows, epoch=0, seed=0)
    assert len(out) == 12
    units = units_of(out)
    assert len(units) == 3 and all(len(u) == 4 for u in units)
    for u in units:
        assert sorted((out[i]["layout"], out[i].get("swapped", False)) for i in u) == \
            [("pab", False), ("pab", True), ("papb", False), ("papb", True)]
    tok = load_tokenizer(resolve_base("tiny:gemma2"))
    fmt = plugins.get("judge_multi")
    for row in out[:4]:
        want = (JudgePAB() if row["layout"] == "pab" else JudgePAPB()).prompt_format(
            row=row, tokenizer=tok, max_length=4340)
        assert fmt.prompt_format(row=row, tokenizer=tok, max_length=4340).input_ids == want.input_ids
    # validation, test rows
    untagged = fmt.prompt_format(row=rows[0], tokenizer=tok, max_length=4340).input_ids
    assert untagged == JudgePAB().prompt_format(row=rows[0], tokenizer=tok, max_length=4340).input_ids
    # the steps still take 80 samples: twice the micro-batches, the same step count as PAB alone
    t1 = s["stage1"].train
    assert t1.batch_size * t1.grad_accum * s["stage1"].launch.gpus == 80 * 2 * 2


def test_a_row_with_an_unknown_layout_is_an_error_naming_row_and_field():
    from replicator.core.errors import ReplicatorError
    from replicator.core.model.loading import load_tokenizer, resolve_base
    from replicator.core.rows import make_row
    from replicator.plugins.judge_pab import JudgeMulti

    row = dict(make_row("r7", ["q"], ["a"], ["b"]), layout="pba")
    with pytest.raises(ReplicatorError, match="row 'r7', field 'layout'"):
        JudgeMulti().prompt_format(row=row, tokenizer=load_tokenizer(resolve_base("tiny:gemma2")),
                                   max_length=512)
    with pytest.raises(ValueError, match="distinct layouts"):
        JudgeMulti(train_layouts=["pab", "pab"])


def test_accelerates_own_sharding_launchers_are_refused():
    """The runner shards FSDP itself (core/shard.py, tests/test_fsdp.py): accelerate's FSDP plugin would wrap
    the model again, and under DeepSpeed ZeRO each process would save its shards as the model."""
    from accelerate.utils import DistributedType

    from replicator.core.errors import ReplicatorError
    from replicator.core.train.trainer import check_parallel

    for kind in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        with pytest.raises(ReplicatorError,
                           match="shards the model itself.*recipes/accelerate/multi_gpu.yaml"):
            check_parallel(kind)
    for kind in (DistributedType.NO, DistributedType.MULTI_GPU, DistributedType.MULTI_CPU):
        check_parallel(kind)
