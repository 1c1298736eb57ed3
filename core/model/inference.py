"""A trained model rebuilt for prediction: its trained tensors loaded into the recipe's model, in 8-bit when
the stage predicts so (bitsandbytes, with the LoRA adapters merged first or not, or GPTQ calibrated on
the rows saved after training, :mod:`replicator.core.model.gptq`)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from replicator.core.config.recipe import ModelConfig
from replicator.core.errors import ReplicatorError
from replicator.core.model import loading  # load_model through its module: tests replace it there
from replicator.core.model.gptq import gptq_8bit, read_calibration
from replicator.core.model.loading import trained_model
from replicator.core.model.tensors import head_module
from replicator.core.util.atomic import atomic_folder
from replicator.core.util.manifest import sha256_file

log = logging.getLogger(__name__)


def load_for_inference(cfg: ModelConfig, plugins, weights: Path, load_in_8bit: bool = False,
                       merge_lora: bool = False, calibration=None):
    """The model rebuilt for prediction (backbone in 8-bit with ``load_in_8bit``) with its trained weights.
    ``merge_lora`` (with ``load_in_8bit``): the adapters are merged into the unquantized weights first and
    the merged model is quantized (9th [P9]: ``merge_and_unload()`` then 8-bit), instead of 8-bit
    weights with 16/32-bit adapters beside them. ``calibration`` (token-id rows): GPTQ 8-bit calibrated
    on those rows instead of bitsandbytes (:func:`replicator.core.model.gptq.gptq_8bit`)."""
    if calibration is not None:
        return gptq_8bit(cfg, plugins, weights, calibration)
    if merge_lora and load_in_8bit and cfg.lora is not None:
        return _merged_in_8bit(cfg, plugins, weights)
    return trained_model(cfg, plugins, weights, load_in_8bit=load_in_8bit or None)


def _merged_in_8bit(cfg: ModelConfig, plugins, weights: Path):
    """The trained adapters merged into the backbone (next to ``weights``, in ``merged-<hash of weights>/``,
    written once per weights file), reloaded with the backbone in 8-bit and the trained head."""
    if cfg.load_in_4bit:
        raise ReplicatorError("predict.merge_lora: the model trained in 4-bit (QLoRA); merging adapters into "
                              "4-bit weights would dequantize them: predict without merge_lora")
    # new weights never meet an old merge
    folder = Path(weights).parent / f"merged-{sha256_file(weights)[:16]}"
    model, tokenizer = trained_model(cfg, plugins, weights)
    merged = model.merge_and_unload()
    name, head = head_module(merged)
    head_state = {f"{name}.{k}": v.detach().clone() for k, v in head.state_dict().items()}
    if not (folder / "config.json").exists():
        atomic_folder(folder,
                      lambda tmp, m=merged: (m.save_pretrained(tmp), tokenizer.save_pretrained(tmp)),
                      keep_existing=True)
    del model, merged  # the unquantized copy goes before the 8-bit one loads
    merged_config = dataclasses.replace(cfg, base=str(folder), lora=None, load_in_8bit=True,
                                        load_in_4bit=False)
    model8, tokenizer8, _ = loading.load_model(merged_config, plugins, train=False)
    unknown = model8.load_state_dict(head_state, strict=False).unexpected_keys
    if unknown:
        raise ReplicatorError(f"predict.merge_lora: head tensors {unknown[:3]} do not fit the merged model")
    log.info("LoRA merged into the backbone (%s), then loaded in 8-bit", folder)
    return model8, tokenizer8


def load_predictor(stage, plugins, weights: Path, calibration_dir: Path | None = None):
    """(model, tokenizer) as ``stage.predict`` asks: 8-bit by bitsandbytes (LoRA merged first or not) or by
    GPTQ, calibrated on the rows saved in ``calibration_dir`` (default: next to ``weights``)."""
    predict = stage.predict
    calibration = None
    if predict.gptq:
        calibration = read_calibration(calibration_dir or Path(weights).parent, predict.gptq_calibration_rows)
    return load_for_inference(stage.model, plugins, weights, load_in_8bit=predict.load_in_8bit,
                              merge_lora=predict.merge_lora, calibration=calibration)
