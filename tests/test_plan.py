"""``replicate plan``: the meta-device models against the published sizes and against the runner's own
model, the memory arithmetic against hand-computed cases and against what autograd really saves, the
shipped accelerate configs against accelerate's own loader, and each solution recipe's plan pinned.

The pins (tests/test_plan/*.yml) change whenever a recipe, a formula or a data size changes; after
checking the difference, regenerate them with::

    pytest tests/test_plan.py --force-regen
"""

from __future__ import annotations

import json
import shlex
from typing import get_args, get_type_hints

import pytest
import yaml

from replicator.core.config.recipe import LaunchConfig, resolve
from replicator.core.errors import RecipeError
from replicator.core.model import memory as M
from replicator.core.model import meta
from replicator.core.run.resources import (
    ROW_TOKENS,
    accelerate_config,
    launch_command,
    mean_tokens,
    measure_row_tokens,
    percentiles,
    plan_resources,
)

from .conftest import RECIPES

SOLUTIONS = ["1st.yaml", "2nd.yaml", "3rd.yaml", "5th.yaml", "9th.yaml", "16th.yaml"]
PARALLEL = get_args(get_type_hints(LaunchConfig)["parallel"])


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """A plan reads no weights and downloads nothing: the hub is off for every test here."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _counts(base: str):
    return meta.counts(meta.build_meta(meta.load_config(base, "test", "model.base")))


# ---------------------------------------------------------------- parameters


# published sizes (the models' hub pages): they count an LM head of vocab x hidden when the embeddings
# are untied (Llama-3, Qwen2); the sequence classifier has a 3-label head instead of it
@pytest.mark.parametrize("base, published", [
    ("google/gemma-2-9b-it", 9.24e9), ("google/gemma-2-9b", 9.24e9), ("google/gemma-2-27b-it", 27.2e9),
    ("meta-llama/Meta-Llama-3-8B-Instruct", 8.03e9), ("meta-llama/Meta-Llama-3-70B-Instruct", 70.6e9),
    ("Qwen/Qwen2-72B-Instruct", 72.7e9), ("sfairXC/FsfairX-Gemma2-RM-v0.1", 9.24e9),
    ("RLHFlow/ArmoRM-Llama3-8B-v0.1", 8.03e9), ("RLHFlow/pair-preference-model-LLaMA3-8B", 8.03e9),
    ("embedded:gemma-3-270m", 268e6)])
def test_meta_models_have_the_published_sizes(base, published):
    c, config = _counts(base), meta.load_config(base, "test", "model.base")
    backbone_and_lm_head = c.total - c.head + c.lm_head
    assert abs(backbone_and_lm_head - published) / published < 0.01, (base, backbone_and_lm_head)
    assert c.head == c.hidden * 3  # the default head: Linear(h, 3, bias=False)
    assert c.lm_head == (0 if config.tie_word_embeddings else config.vocab_size * c.hidden)
    assert config.tie_word_embeddings == c.model_type.startswith("gemma")


def test_the_lm_head_accounting_is_exact_on_the_causal_model():
    import torch
    from transformers import AutoModelForCausalLM

    for base in ("google/gemma-2-9b-it", "meta-llama/Meta-Llama-3-8B"):
        config = meta.load_config(base, "test", "model.base")
        with torch.device("meta"):
            causal = AutoModelForCausalLM.from_config(config)
        c = _counts(base)
        assert sum(p.numel() for p in causal.parameters()) == c.total - c.head + c.lm_head


def test_every_recipe_base_has_an_architecture():
    for path in sorted(RECIPES.glob("*.yaml")):
        for t in [None, *(yaml.safe_load(path.read_text()).get("toggles") or {})]:
            for s in resolve(path, [t] if t else [], check_plugins=False).stages:
                if not s.model.base.startswith("baseline:"):
                    assert meta.load_config(s.model.base, str(path), "model.base").num_labels == 3


def test_an_unknown_base_is_an_error_naming_the_key_and_the_known_ones():
    with pytest.raises(RecipeError) as e:
        plan_resources(RECIPES / "5th.yaml", [], ["model.base=acme/unknown-7b"])
    assert "5th.yaml: stages.pretrain.model.base" in str(e.value) and "acme/unknown-7b" in str(e.value)
    assert "google/gemma-2-9b-it" in str(e.value) and "Qwen/Qwen2-72B-Instruct" in str(e.value)
    with pytest.raises(RecipeError, match=r"16th.yaml: model.lora.targets: foo_proj: no such Linear module"):
        plan_resources(RECIPES / "16th.yaml", [], ["model.lora.targets=[q_proj, foo_proj]"])


@pytest.mark.parametrize("name, overrides", [
    ("1st.yaml", []), ("1st.yaml", ["model.freeze_layers=1"]), ("2nd.yaml", []),
    ("2nd.yaml", ["model.freeze_layers=1"]), ("3rd.yaml", []), ("16th.yaml", [])])
def test_trainable_parameters_are_the_runners(name, overrides):
    """The plan's counts on the meta device equal what load_model builds (tiny models, real weights)."""
    from replicator.core.config.catalogue import build_plugins
    from replicator.core.model.loading import load_model
    from replicator.core.run.resources import plan_stage

    r = resolve(RECIPES / name, ["tiny"], overrides)
    stage = r.stages[-1]
    _, _, info = load_model(stage.model, build_plugins(stage.plugins, r.file))
    p = plan_stage(r, stage)["model"]
    assert p["trainable"] == info["trainable_params"] > 0
    # peft keeps the original head next to its trainable copy (modules_to_save)
    copy = p["head"] if p["fine_tuning"] == "lora" else 0
    assert p["params"] + p["lora_adapters"] + copy == info["all_params"]


def test_lora_counts_match_peft_at_full_size():
    from peft import LoraConfig, TaskType, get_peft_model

    c = _counts("google/gemma-2-9b-it")
    for freeze, targets in ((0, "all-linear"), (16, ["q_proj", "v_proj", "down_proj"])):
        model = meta.build_meta(meta.load_config("google/gemma-2-9b-it", "test", "model.base"))
        names = targets if freeze == 0 else list(targets)
        peft = get_peft_model(model, LoraConfig(
            task_type=TaskType.SEQ_CLS, r=64, lora_alpha=128, target_modules=names, modules_to_save=["score"],
            layers_to_transform=list(range(freeze, c.layers)) if freeze else None))
        expected = sum(p.numel() for p in peft.parameters() if p.requires_grad)
        lora = (64, meta.lora_targets(c, targets, "test", "model.lora.targets"))
        assert meta.trainable(c, lora, freeze)[0] == expected
    assert meta.trainable(c, None, 0) == (c.total, 0)
    assert meta.trainable(c, None, 2)[0] == c.total - c.embeddings - 2 * c.layer_params[0]


# ---------------------------------------------------------------- memory arithmetic


def _m(**kw) -> M.Model:
    base = dict(total=1000, quantizable=800, trainable=1000, adapters=0, layers=2, hidden=4, kv_dim=2,
                act_token=60, layer_params=400)
    return M.Model(**{**base, **kw})


def test_full_fine_tuning_in_bf16_under_ddp_by_hand():
    out = M.train_memory(_m(), dtype="bfloat16", quant=None, optimizer="adamw", mixed_precision="no",
                         parallel="ddp", gpus=2, rows=1, seq_len=10, checkpointing=False, gpu=False)
    # weights 1000 x 2 B; gradients 1000 x 2 B x 2 (DDP buckets); AdamW moments in bf16 2 x 2 B;
    # activations 1 row x 10 tokens x 2 layers x 60 elements x 2 B; nothing sharded under DDP
    assert out == {"weights": 2000, "gradients": 4000, "optimizer": 4000, "master": 0, "activations": 2400,
                   "overhead": 0, "total": 12400}


def test_qlora_under_zero2_by_hand():
    out = M.train_memory(_m(trainable=50, adapters=40, act_lora=10), dtype="bfloat16", quant="nf4",
                         optimizer="adamw", mixed_precision="no", parallel="zero2", gpus=4, rows=2,
                         seq_len=10, checkpointing=True)
    nf4 = 0.5 + 1 / 64 + 4 / 16384
    # 800 nf4 weights + 200 others upcast to fp32, + the 50 trainable (fp32 LoRA) whole on every GPU; ZeRO's
    # fp32 copy of each partition, fp32 gradients and fp32 AdamW moments sharded over 4; checkpointing keeps
    # 2 layer inputs of h = 4 and one layer of 60 + 10 (LoRA) elements per token, 20 tokens, 2 B each
    assert out["weights"] == pytest.approx(800 * nf4 + 200 * 4 + 50 * 4)
    assert (out["master"], out["gradients"], out["optimizer"]) == (50 * 4 / 4, 50 * 4 / 4, 50 * 8 / 4)
    assert out["activations"] == 20 * (2 * 4 + 70) * 2
    assert out["overhead"] == M.GPU_OVERHEAD_GIB * M.GIB
    assert out["total"] == pytest.approx(sum(out[k] for k in M.COMPONENTS))


def test_lora_with_kahan_under_fsdp_full_shard_and_eager_attention_by_hand():
    out = M.train_memory(_m(trainable=50, adapters=40, act_attn=3), dtype="bfloat16", quant=None,
                         optimizer="adamw_kahan", mixed_precision="no", parallel="fsdp_full_shard", gpus=2,
                         rows=1, seq_len=10, checkpointing=False, gpu=False)
    # fp32 LoRA weights next to bf16 compute are the master weights (4 B), fp32 gradients, Kahan: 3 x 4 B;
    # all sharded over 2, plus two gathered layers of 400 parameters in bf16; attention adds 3 x 10 per token
    assert out == {"weights": 1000 * 2 / 2 + 2 * 400 * 2, "gradients": 50 * 4 / 2, "optimizer": 50 * 12 / 2,
                   "master": 50 * 4 / 2, "activations": 10 * 2 * (60 + 3 * 10) * 2, "overhead": 0,
                   "total": 2600 + 100 + 300 + 100 + 3600}


def test_fp32_weights_with_bf16_compute_are_master_weights():
    out = M.train_memory(_m(), dtype="float32", quant=None, optimizer="adamw_8bit", mixed_precision="bf16",
                         parallel="fsdp_shard_grad_op", gpus=4, rows=1, seq_len=10, checkpointing=True,
                         gpu=False)
    assert out["weights"] == 0 and out["master"] == 1000 * 4 / 4 and out["gradients"] == 1000 * 4 / 4
    assert out["optimizer"] == pytest.approx(1000 * 2 * (1 + 4 / 256) / 4)
    assert out["activations"] == 10 * (2 * 4 + 60) * 2


def test_inference_by_hand():
    out = M.inference_memory(_m(trainable=50, adapters=40, act_attn=3), dtype="bfloat16", quant="int8",
                             tokens=100, seq_len=20, gpu=False)
    # int8 Linear weights, bf16 rest, fp32 adapters; one layer (60 + 3 x 20), no key/value cache
    assert out["weights"] == 800 * 1 + 200 * 2 + 40 * 4
    assert out["activations"] == 100 * (60 + 3 * 20) * 2
    assert out["total"] == out["weights"] + out["activations"]


def test_optimizer_state_bytes():
    assert M.OPTIMIZERS["adamw"][0](4) == 8 and M.OPTIMIZERS["adamw"][0](2) == 4
    assert M.OPTIMIZERS["adamw_kahan"][0](2) == 6
    assert M.OPTIMIZERS["paged_adamw_8bit"][0](4) == pytest.approx(2.03, abs=0.01)
    with pytest.raises(ValueError, match="sgd"):
        M.train_memory(_m(), dtype="bfloat16", quant=None, optimizer="sgd", mixed_precision="no",
                       parallel="single", gpus=1, rows=1, seq_len=1, checkpointing=False)


def _saved_bytes_per_layer_token(make, rows: int, seq: int, lora: dict | None = None) -> float:
    """Bytes autograd keeps per decoder layer per token in bf16 (4 layers minus 2, so embeddings and head
    cancel), counting each storage once and leaving the parameters out."""
    import torch
    from transformers import AutoModelForSequenceClassification

    def saved(layers: int) -> int:
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_config(make(layers)).to(torch.bfloat16)
        model.config.pad_token_id = 0
        if lora:
            from peft import LoraConfig, TaskType, get_peft_model

            model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, **lora))
        model.train()
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        seen: dict[int, int] = {}

        def pack(t):
            if t.untyped_storage().data_ptr() not in params:
                seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        ids = torch.randint(1, 100, (rows, seq))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
        return sum(seen.values())

    return (saved(4) - saved(2)) / 2 / (rows * seq)


def _tiny(kind: str, **kw):
    """A maker of small configs of ``kind`` by number of layers (h 128, q 128, kv 64, i 512)."""
    from transformers import Gemma2Config, LlamaConfig, Qwen2Config

    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config, "gemma2": Gemma2Config}[kind]
    return lambda layers: cls(vocab_size=100, hidden_size=128, intermediate_size=512,
                              num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                              head_dim=32, num_labels=3, **kw)


@pytest.mark.parametrize("kind, softcap", [("llama", None), ("qwen2", None), ("gemma2", 50.0),
                                           ("gemma2", None)])
def test_activation_coefficients_are_what_autograd_saves(kind, softcap):
    make = _tiny(kind, **({"attn_logit_softcapping": softcap} if kind == "gemma2" else {}))
    seq = 32
    measured = _saved_bytes_per_layer_token(make, rows=2, seq=seq)
    eager = kind == "gemma2"  # transformers has no SDPA for Gemma-2: eager attention keeps s x s matrices
    per_token = M.layer_elements(kind, 128, 128, 64, 512) + (4 * M.EAGER_ATTENTION[softcap is not None] * seq
                                                             if eager else 0)
    assert measured == pytest.approx(per_token * 2, rel=0.02)


def test_lora_activations_are_what_autograd_saves():
    make = _tiny("llama")
    lora = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": "all-linear"}
    extra = _saved_bytes_per_layer_token(make, 2, 32, lora) - _saved_bytes_per_layer_token(make, 2, 32)
    inputs = [128, 128, 128, 128, 128, 128, 512]  # q, k, v, o (q width 128), gate, up, down
    assert extra == pytest.approx(M.lora_elements(inputs, 8, 0.05) * 2, rel=0.1)


# ---------------------------------------------------------------- tokens


def test_mean_tokens_of_a_percentile_table():
    assert mean_tokens(5, table=(0, 10, 20)) == (2.5 + 5) / 2  # trapezoids of min(t, 5)
    assert mean_tokens(8) == 8  # every real row has at least 8 tokens
    assert mean_tokens(256) < mean_tokens(1024) < mean_tokens(4096) < mean_tokens(10**6)
    assert percentiles(list(range(101))) == tuple(range(101))


@pytest.mark.real_data
def test_the_token_table_is_what_the_shared_rows_measure():
    from replicator.core.data.files import data_dir

    lengths = measure_row_tokens(data_dir())
    assert percentiles(lengths) == ROW_TOKENS
    for cut in (256, 1024, 2048, 4340):  # the table's trapezoids against the rows themselves
        assert mean_tokens(cut) == pytest.approx(sum(min(n, cut) for n in lengths) / len(lengths), rel=0.01)


# ---------------------------------------------------------------- launch and accelerate


def test_launch_is_a_patchable_section_and_not_in_the_run_id():
    r = resolve(RECIPES / "2nd.yaml", [], ["stages.stage1.launch={gpus: 8, parallel: ddp}"])
    assert [(s.launch.gpus, s.launch.parallel) for s in r.stages] == [
        (8, "ddp"), (4, "fsdp_full_shard"), (4, "fsdp_shard_grad_op"), (4, "fsdp_shard_grad_op"),
        (4, "fsdp_shard_grad_op")]
    assert r.config_hash == resolve(RECIPES / "2nd.yaml").config_hash
    with pytest.raises(RecipeError, match=r"stages.stage1.launch.parallel: parallel 'single' runs one"):
        resolve(RECIPES / "2nd.yaml", [], ["launch.parallel=single"])
    with pytest.raises(RecipeError, match=r"launch.parallel: parallel 'zero3' is sized .* fsdp_full_shard"):
        resolve(RECIPES / "16th.yaml", ["tiny"], ["launch.parallel=zero3", "launch.gpus=2"])
    assert resolve(RECIPES / "16th.yaml", ["tiny"], ["launch.parallel=zero2", "launch.gpus=2"]) \
        .final.launch.parallel == "zero2"  # DeepSpeed runs on a CPU too (its CPU accelerator, gloo)
    assert resolve(RECIPES / "16th.yaml", ["tiny"], ["launch.parallel=fsdp_full_shard", "launch.gpus=2"]) \
        .final.launch.parallel == "fsdp_full_shard"  # the runner shards on a CPU too (gloo)
    with pytest.raises(RecipeError, match=r"launch.gpu: gpu 'B200' is not a known name.*set gpu_memory_gb"):
        resolve(RECIPES / "16th.yaml", [], ["launch.gpu=B200"])
    assert resolve(RECIPES / "16th.yaml", [], ["launch.gpu=B200", "launch.gpu_memory_gb=180"]).final.launch \
        .memory_gib == 180


def test_launch_commands():
    ddp = LaunchConfig(gpus=2, gpu="cpu", gpu_memory_gb=8, parallel="ddp")
    smoke = RECIPES / "smoke.yaml"
    assert launch_command(smoke, ddp, ["tiny"], ["train.lr=1e-3"]) == \
        f"torchrun --nproc_per_node 2 -m replicator.core.cli run {smoke} -t tiny train.lr=1e-3"
    assert launch_command(RECIPES / "5th.yaml", LaunchConfig()) == f"replicate run {RECIPES / '5th.yaml'}"
    fsdp = launch_command(RECIPES / "2nd.yaml", LaunchConfig(gpus=4, parallel="fsdp_full_shard"))
    assert (fsdp.startswith("accelerate launch --config_file ")
            and "multi_gpu.yaml --num_processes 4 -m replicator" in fsdp)


def test_a_plan_names_different_launch_settings_per_stage():
    p = plan_resources(RECIPES / "2nd.yaml", [], ["stages.stage1.launch={gpus: 8, parallel: ddp}"])
    assert any("different launch settings" in n for n in p["notes"])
    commands = [s["command"] for s in p["stages"]]
    assert "--num_processes 8" in commands[0] and "--num_processes 4" in commands[1]


@pytest.mark.parametrize("parallel", [p for p in PARALLEL if p != "single"])
def test_every_accelerate_config_loads_and_launches_as_named(parallel):
    """The shipped file loads with accelerate's own loader, and the command the plan prints goes through
    accelerate's own argument validation: plain multi-GPU processes for every parallelism (the runner
    applies FSDP2 and DeepSpeed ZeRO-2 itself and refuses accelerate's FSDP and DeepSpeed launches)."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    path = accelerate_config(RECIPES / "x.yaml")
    cfg = load_config_from_file(str(path))
    assert (path.name == "multi_gpu.yaml" and cfg.distributed_type.value == "MULTI_GPU"
            and cfg.num_machines == 1)
    launch = LaunchConfig(gpus=4, parallel=parallel)
    argv = shlex.split(launch_command(RECIPES / "2nd.yaml", launch))
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(argv[2:]))
    assert args.num_processes == 4 and args.module and args.training_script == "replicator.core.cli"
    assert (args.use_fsdp, args.use_deepspeed, args.multi_gpu) == (False, False, True)


def test_the_wrapped_layer_class_exists_in_the_runners_models():
    from accelerate.utils.dataclasses import get_module_class_from_name

    from replicator.core.config.catalogue import build_plugins
    from replicator.core.model.loading import load_model

    for name in ("1st.yaml", "3rd.yaml"):
        r = resolve(RECIPES / name, ["tiny"])
        for stage in r.stages:
            model, _, _ = load_model(stage.model, build_plugins(stage.plugins, r.file))
            config = meta.load_config(stage.model.base, r.file, "model.base")
            layer = meta.counts(meta.build_meta(config)).layer_class
            assert get_module_class_from_name(model, layer) is not None, (name, stage.name, layer)


@pytest.mark.parametrize("name", sorted(p.name for p in RECIPES.glob("*.yaml")))
def test_every_recipe_launch_maps_to_a_shipped_config(name):
    path = RECIPES / name
    for t in [None, *(yaml.safe_load(path.read_text()).get("toggles") or {})]:
        for s in resolve(path, [t] if t else [], check_plugins=False).stages:
            shipped = accelerate_config(path).is_file()
            assert s.launch.parallel == "single" or shipped, (name, t, s.name)


# ---------------------------------------------------------------- plans


@pytest.mark.parametrize("name", SOLUTIONS)
def test_solution_plan_is_pinned(name, data_regression):
    p = plan_resources(RECIPES / name)
    pinned = {}
    for s in p["stages"]:
        d = s["data"]
        pinned[s["stage"]] = {
            "base": s["base"], "params": s["model"]["params"], "trainable": s["model"]["trainable"],
            "memory_gib": s["memory_gib"], "fits": s["fits"], "flags": s["flags"], "launch": s["launch"],
            "rows_per_epoch": d["rows_per_epoch"], "tokens_per_epoch_max": d["tokens_per_epoch_max"],
            "tokens_per_epoch_est": d["tokens_per_epoch_est"], "steps_per_epoch": d["steps_per_epoch"],
            "steps": d["steps"], "predicted_rows": d["predicted_rows"],
            "command": s["command"].replace(str(RECIPES), "recipes")}
    data_regression.check(pinned)


def test_a_stage_that_does_not_fit_is_flagged_and_strict_fails():
    from typer.testing import CliRunner

    from replicator.core.cli import app

    small = ["launch.gpus=1", "launch.parallel=single", "launch.gpu=RTX-4090"]
    p = plan_resources(RECIPES / "2nd.yaml", [], small)
    assert not p["fits"] and not p["stages"][0]["fits"]
    assert p["stages"][0]["flags"][0].startswith("DOES NOT FIT: train needs ")
    assert p["stages"][0]["flags"][0].endswith(" GiB per GPU, RTX-4090 has 24")
    assert plan_resources(RECIPES / "2nd.yaml")["fits"]  # on the 4 x A100 80GB it names
    args = ["plan", str(RECIPES / "2nd.yaml"), *small]
    lenient, strict = CliRunner().invoke(app, args), CliRunner().invoke(app, [*args, "--strict"])
    assert lenient.exit_code == 0 and "DOES NOT FIT: train needs" in lenient.output
    assert strict.exit_code == 1 and "SOME STAGES DO NOT FIT" in strict.output


def test_json_has_the_numbers_of_the_plan():
    from typer.testing import CliRunner

    from replicator.core.cli import app

    out = CliRunner().invoke(app, ["plan", str(RECIPES / "5th.yaml"), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == json.loads(json.dumps(plan_resources(RECIPES / "5th.yaml")))
