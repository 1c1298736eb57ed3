"""``replicate plan`` (core/run/resources.py): tokens, steps and launch commands, the shipped accelerate
configs against accelerate's own loader, and each solution recipe's plan pinned.

The pins (tests/run/test_resources/*.yml) change whenever a recipe, a formula or a data size changes; after
checking the difference, regenerate them with::

    pytest tests/run/test_resources.py --force-regen"""

from __future__ import annotations

import json
import shlex
from typing import get_args, get_type_hints

import pytest
import yaml

from replicator.core.config.recipe import LaunchConfig, resolve
from replicator.core.errors import RecipeError
from replicator.core.run.resources import (
    ROW_TOKENS,
    accelerate_config,
    format_plan,
    launch_command,
    mean_tokens,
    measure_row_tokens,
    optimizer_steps,
    percentiles,
    plan_resources,
)

from ..conftest import RECIPES

pytestmark = pytest.mark.usefixtures("offline")


SOLUTIONS = ["1st.yaml", "2nd.yaml", "3rd.yaml", "5th.yaml", "9th.yaml", "16th.yaml", "author.yaml"]

PARALLEL = get_args(get_type_hints(LaunchConfig)["parallel"])


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


@pytest.mark.parametrize("name", sorted(p.name for p in RECIPES.glob("*.yaml")))
def test_every_recipe_launch_maps_to_a_shipped_config(name):
    path = RECIPES / name
    for t in [None, *(yaml.safe_load(path.read_text()).get("toggles") or {})]:
        for s in resolve(path, [t] if t else [], check_plugins=False).stages:
            shipped = accelerate_config(path).is_file()
            assert s.launch.parallel == "single" or shipped, (name, t, s.name)


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
            "steps": d["steps"], "predicted_rows": d["predicted_rows"], "batch": s["batch"],
            "attention": s["model"]["attention"],
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


def test_eager_attention_costs_what_flash_attention_saves_and_a_plan_that_does_not_fit_says_so():
    """2nd's stage 1 as the write-up's m0 but with rows of 8 x 4,340 tokens and eager attention: the s x s
    matrices (saved, their backward's gradients, the masks) push it past 80 GiB, the plan says by how much
    and what would save it; flash_attention_2 keeps none; sdpa is what transformers refuses for Gemma-2."""
    rows = ["train.batch_tokens=null", "train.packed=false", "train.batch_size=8"]

    def stage1(attention):
        return plan_resources(RECIPES / "2nd.yaml", [], [*rows, f"model.attn_implementation={attention}"]
                              )["stages"][0]

    eager, flash = stage1("eager"), stage1("flash_attention_2")
    e, f = eager["memory_gib"]["train"], flash["memory_gib"]["train"]
    assert eager["model"]["attention"] == "eager" and flash["model"]["attention"] == "flash_attention_2"
    assert eager["batch"]["memory_rows"] == 8 and e["temporary"] > 5 > f["temporary"]
    assert e["activations"] - f["activations"] > 15  # 8 x 4,340 tokens x 16 heads x 4,340 x 4 x 2 B + masks
    assert not eager["fits"] and flash["fits"] and e["total"] > 80
    assert any(n.startswith("train: eager attention's s x s matrices") and "flash_attention_2" in n
               for n in eager["notes"])
    # FSDP2's resident shard (shard_grad_op keeps the gathered model from forward to backward beside it)
    assert f["weights"] == pytest.approx(f["gathered"] / 4, abs=1.5)
    auto = plan_resources(RECIPES / "2nd.yaml", [], [*rows, "model.attn_implementation=auto"])["stages"][0]
    assert auto["model"]["attention"] == "eager"  # transformers' own choice for Gemma-2
    with pytest.raises(RecipeError, match="model.attn_implementation: transformers has no sdpa attention"):
        stage1("sdpa")
    v100 = plan_resources(RECIPES / "2nd.yaml", [], ["model.attn_implementation=flash_attention_2",
                                                      "launch.gpu=V100-32GB"])
    assert any(f.startswith("CANNOT RUN: model.attn_implementation flash_attention_2")
               for f in v100["stages"][0]["flags"]) and not v100["fits"]


@pytest.mark.parametrize("gpus", [1, 2, 8])
def test_one_two_and_eight_gpus_give_the_same_global_batch_and_steps(gpus):
    """train.global_batch: the plan derives each process's rows and accumulation for launch.gpus as the
    runner does, and the optimizer steps do not change with the GPU count."""
    base = plan_resources(RECIPES / "16th.yaml", [], ["train.global_batch=16", "launch.gpus=1"])["stages"][0]
    p = plan_resources(RECIPES / "16th.yaml", [], ["train.global_batch=16", f"launch.gpus={gpus}"])
    stage = p["stages"][0]
    b = stage["batch"]
    assert b["global_rows"] == 16 and b["stated"] and b["processes"] == gpus
    assert b["micro_rows"] * b["accumulation"] * gpus == 16 and b["micro_rows"] <= 2  # 16th's batch_size 2
    assert stage["data"]["steps"] == base["data"]["steps"] == -(-stage["data"]["rows_per_epoch"] // 16)
    assert "global batch 16 rows per optimizer step (train.global_batch)" in format_plan(p)


def test_a_global_batch_that_does_not_split_over_the_gpus_is_flagged():
    p = plan_resources(RECIPES / "16th.yaml", [], ["train.global_batch=8", "launch.gpus=3"])
    stage = p["stages"][0]
    assert not p["fits"] and not stage["fits"] and "error" in stage["batch"]
    assert stage["flags"][0].startswith("CANNOT RUN: train.global_batch: 8 rows per step do not split over 3 "
                                        "processes; launch with one of [1, 2, 4, 8] processes")
    assert stage["data"]["steps"] == -(-stage["data"]["rows_per_epoch"] // 8)  # the steps stay the recipe's
    text = format_plan(p)
    assert "does not split over 3 GPU(s)" in text and "SOME STAGES DO NOT FIT" in text


def test_optimizer_steps_of_a_global_batch_do_not_depend_on_the_processes():
    from replicator.core.config.recipe import TrainConfig

    stated = TrainConfig(global_batch=16, batch_size=4)
    assert {optimizer_steps(1000, stated, n) for n in (1, 2, 8)} == {63}
    budget = TrainConfig(global_batch=16, batch_size=4, batch_tokens=4096, max_length=512)
    assert {optimizer_steps(1000, budget, n) for n in (1, 2, 8)} == {63}
    per_process = TrainConfig(batch_size=4, grad_accum=2)  # no global_batch: grows with the processes
    assert [optimizer_steps(1000, per_process, n) for n in (1, 2, 8)] == [125, 63, 16]


def test_json_has_the_numbers_of_the_plan():
    from typer.testing import CliRunner

    from replicator.core.cli import app

    out = CliRunner().invoke(app, ["plan", str(RECIPES / "5th.yaml"), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == json.loads(json.dumps(plan_resources(RECIPES / "5th.yaml")))


def test_the_plan_counts_the_token_budget():
    def stage(overrides):
        return plan_resources(RECIPES / "smoke.yaml", [],
                              ["launch.gpu=cpu", "launch.gpu_memory_gb=64", "train.batch_size=4",
                               "train.max_length=512", *overrides])["stages"][0]

    rows, budget = stage([]), stage(["train.batch_tokens=4096"])
    act = rows["memory_gib"]["train"]["activations"]
    assert budget["memory_gib"]["train"]["activations"] == pytest.approx(2 * act, rel=0.05)  # 8 rows of 512
    assert budget["batch"]["memory_rows"] == 8 and rows["batch"]["memory_rows"] == 4
    # a global batch: its rows per step, budgets or not; without one, full budgets of tokens per step
    assert budget["data"]["steps"] == rows["data"]["steps"]
    per_process = ["train.global_batch=null", "train.grad_accum=2"]
    fewer = stage([*per_process, "train.batch_tokens=4096"])["data"]["steps"]
    assert fewer < stage(per_process)["data"]["steps"]
    assert any("batch_tokens 4096" in n for n in budget["notes"]) and not any(
        "batch_tokens" in n for n in rows["notes"]
    )
