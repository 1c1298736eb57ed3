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
    launch_command,
    mean_tokens,
    measure_row_tokens,
    percentiles,
    plan_resources,
)

from ..conftest import RECIPES

pytestmark = pytest.mark.usefixtures("offline")


SOLUTIONS = ["1st.yaml", "2nd.yaml", "3rd.yaml", "5th.yaml", "9th.yaml", "16th.yaml"]

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


def test_the_plan_counts_the_token_budget():
    from replicator.core.run.resources import plan_resources

    from ..conftest import RECIPES

    def stage(overrides):
        return plan_resources(RECIPES / "smoke.yaml", [],
                              ["launch.gpu=cpu", "launch.gpu_memory_gb=64", *overrides])["stages"][0]

    rows = stage(["train.batch_size=4", "train.max_length=512"])
    budget = stage(["train.batch_size=4", "train.max_length=512", "train.batch_tokens=4096"])
    act = rows["memory_gib"]["train"]["activations"]
    assert budget["memory_gib"]["train"]["activations"] == pytest.approx(2 * act, rel=0.05)  # 8 rows of 512
    assert budget["data"]["steps"] < rows["data"]["steps"]
    assert any("batch_tokens 4096" in n for n in budget["notes"]) and not any(
        "batch_tokens" in n for n in rows["notes"]
    )
