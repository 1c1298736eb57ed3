"""``replicate export`` and ``replicate push`` (core/run/export.py): a tiny run's adapters and head loaded
with ``PeftModel.from_pretrained`` give the runner's own logits, a full fine-tune loads with
``AutoModelForSequenceClassification``, the model card says what the run is, and a push's requests go to a
local stand-in of the hub (an HTTP server on 127.0.0.1) that rebuilds the uploaded folder from them."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from replicator.core.cli import app
from replicator.core.config.catalogue import build_plugins
from replicator.core.config.recipe import resolve
from replicator.core.data.competition import read_competition_csv
from replicator.core.data.files import data_dir
from replicator.core.errors import ReplicatorError
from replicator.core.model.inference import load_predictor
from replicator.core.run.export import export_run, push_run
from replicator.core.run.finished_runs import run_parts
from replicator.core.run.pipeline import run_recipe
from replicator.core.tokens.batches import collate, forward_logits
from replicator.core.util.layout import WEIGHTS

from ..train.test_tracking import TINY_RECIPE, write_recipe


def _run(folder: Path, **changes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    r = resolve(write_recipe(folder, **changes), [], ["tracking=none"], data_dir=data_dir())
    return run_recipe(r, data_dir(), progress=False)[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, synthetic_data_dir):
    """Finished tiny runs: LoRA, full fine-tuning and a baseline (reports and artifacts in a temp folder)."""
    root = tmp_path_factory.mktemp("export")
    mp = pytest.MonkeyPatch()
    for k, v in (("REPLICATOR_REPORTS", root / "reports"), ("REPLICATOR_ARTIFACTS", root / "artifacts"),
                 ("REPLICATOR_DATA_DIR", synthetic_data_dir), ("HF_HUB_OFFLINE", "1")):
        mp.setenv(k, str(v))
    try:
        lora = _run(root / "lora")
        full = _run(root / "full", name="tinyfull",
                    model={**TINY_RECIPE["model"], "lora": None}, train={**TINY_RECIPE["train"], "lr": 1e-3})
        baseline = _run(root / "baseline", name="tinybase", model={"base": "baseline:length_lr"},
                        plugins={"data": TINY_RECIPE["plugins"]["data"]})
        yield {"root": root, "lora": lora, "full": full, "baseline": baseline, "data": synthetic_data_dir}
    finally:
        mp.undo()


def _inputs(run_dir: Path, data: Path, n: int = 6):
    """The runner's prediction model of ``run_dir`` and (ids, mask) of ``n`` arena rows as its prompt plugin
    formats them, right-padded as the runner batches them."""
    _, stage, artifacts = run_parts(run_dir)
    plugins = build_plugins(stage.plugins, "x", unused=stage.unused_hooks)
    model, tokenizer = load_predictor(stage, plugins, artifacts / WEIGHTS)
    rows = read_competition_csv(data / "lmsys-chatbot-arena" / "train.csv", require_labels=True)[:n]
    seqs = [plugins.one("prompt_format", row=r, tokenizer=tokenizer, max_length=1024).input_ids for r in rows]
    ids, mask = collate(seqs, tokenizer.pad_token_id, "cpu")
    assert (mask == 0).any()  # rows of several lengths: the padding is part of the check
    return model.eval(), tokenizer, ids, mask


def test_exported_adapter_loads_with_peft_to_the_runners_logits(runs, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "hub"
    info = export_run(str(runs["lora"]), out)
    assert info["kind"] == "peft_lora" and info["plain_head"]
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "resolved.yaml", "metrics.json",
            "export.json", "tokenizer.json", "tokenizer_config.json"} <= set(info["files"])
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA" and adapter["task_type"] == "SEQ_CLS" and "score" in \
        adapter["modules_to_save"] and adapter["r"] == 8
    runner, tokenizer, ids, mask = _inputs(runs["lora"], runs["data"])
    base_path = adapter["base_model_name_or_path"]  # tiny:llama's folder (a hub id for a hub base)
    base = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=3)
    loaded = PeftModel.from_pretrained(base, out).eval()
    fresh = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=3).eval()
    with torch.no_grad():
        expected, got = forward_logits(runner, ids, mask), loaded(input_ids=ids, attention_mask=mask).logits
        plain = forward_logits(fresh, ids, mask)
    assert got.shape == (6, 3) and torch.allclose(got, expected, atol=1e-6, rtol=0), (got, expected)
    assert not torch.allclose(got, plain, atol=1e-3)  # the adapters and head count
    text = "which response is better ? the first one"
    assert AutoTokenizer.from_pretrained(out)(text)["input_ids"] == tokenizer(text)["input_ids"]
    # the run keeps its own weights file (predict, fold averaging and later stages read it)
    assert (runs["root"] / "artifacts" / "tinytrack" / runs["lora"].name / "main" / WEIGHTS).is_file()


def test_model_card_says_what_the_run_is(runs, tmp_path):
    out = tmp_path / "hub"
    export_run(str(runs["lora"]), out)
    card = (out / "README.md").read_text()
    metrics = json.loads((runs["lora"] / "metrics.json").read_text())
    assert card.startswith("---\nlibrary_name: peft\n") and "pipeline_tag: text-classification" in card
    assert f"# tinytrack: {runs['lora'].name}" in card
    assert "0 `winner_model_a`, 1 `winner_model_b`, 2 `winner_tie`" in card
    assert "PeftModel.from_pretrained(base, " in card and "plain_turns" in card
    assert f"| final (TTA, postprocessed) | {metrics['final_log_loss']:.4f} |  |" in card
    assert f"| length baseline | {metrics['baseline_length_log_loss']:.4f} | " in card
    assert "LoRA r=8, alpha=16" in card and "`train.csv`" in card
    assert f"replicate predict {runs['lora']}" in card
    assert (out / "resolved.yaml").read_text() == (runs["lora"] / "resolved.yaml").read_text()
    record = json.loads((out / "export.json").read_text())
    assert record["run_id"] == runs["lora"].name and record["kind"] == "peft_lora"


def test_full_fine_tune_loads_with_auto_model(runs, tmp_path):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "hub"
    assert export_run(str(runs["full"]), out)["kind"] == "full"
    assert (out / "config.json").is_file() and not (out / "adapter_config.json").exists()
    loaded = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert loaded.config.id2label == {0: "winner_model_a", 1: "winner_model_b", 2: "winner_tie"}
    runner, _, ids, mask = _inputs(runs["full"], runs["data"])
    with torch.no_grad():
        assert torch.allclose(forward_logits(loaded, ids, mask), forward_logits(runner, ids, mask), atol=1e-6)
    assert (out / "README.md").read_text().startswith("---\nlibrary_name: transformers\n")


def test_export_refuses_what_it_cannot_write(runs, tmp_path):
    with pytest.raises(ReplicatorError, match="a baseline run has no fine-tuned model to export"):
        export_run(str(runs["baseline"]), tmp_path / "b")
    with pytest.raises(ReplicatorError, match="is inside the run's folder"):
        export_run(str(runs["lora"]), runs["lora"] / "hub")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ReplicatorError, match="holds files that no export wrote"):
        export_run(str(runs["lora"]), tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    export_run(runs["lora"].name, tmp_path / "again")  # a run id works too
    export_run(str(runs["lora"]), tmp_path / "again")  # an earlier export is replaced


class HubStandIn(BaseHTTPRequestHandler):
    """The three requests of a push, answered as the hub does: create the repo, say every file uploads
    inline ("regular"), take the commit (its files base64-encoded in NDJSON lines)."""

    requests: list = []

    def log_message(self, *args):
        pass

    def _answer(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.requests.append((self.path, dict(self.headers), body))
        base = f"http://127.0.0.1:{self.server.server_port}"
        if self.path == "/api/repos/create":
            name = json.loads(body)
            return self._answer(200, {"url": f"{base}/{name['organization']}/{name['name']}"})
        if "/preupload/" in self.path:
            files = json.loads(body)["files"]
            return self._answer(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                 "shouldIgnore": False} for f in files]})
        if self.path == "/api/validate-yaml":  # the model card's front matter, checked as the hub does
            content = json.loads(body)["content"]
            front = yaml.safe_load(content.split("---")[1]) if content.startswith("---\n") else None
            ok = isinstance(front, dict) and front.get("pipeline_tag") == "text-classification"
            return self._answer(200 if ok else 400, {"errors": [] if ok else [{"message": "bad metadata"}]})
        if "/commit/" in self.path:
            oid = "a" * 40
            return self._answer(200, {"commitUrl": f"{base}/me/arena/commit/{oid}", "commitOid": oid})
        return self._answer(404, {"error": f"no route {self.path}"})

    def do_GET(self):
        self.requests.append((self.path, dict(self.headers), b""))
        self._answer(404, {"error": f"no route {self.path}"})


@pytest.fixture
def hub(monkeypatch):
    """The stand-in on a free loopback port; the hub client's offline switch off for the test."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    HubStandIn.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), HubStandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", HubStandIn.requests
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def _uploaded(requests) -> dict[str, bytes]:
    (commit,) = [b for p, _, b in requests if p == "/api/models/me/arena/commit/main"]
    lines = [json.loads(line) for line in commit.decode().splitlines()]
    assert lines[0]["key"] == "header"
    return {v["path"]: base64.b64decode(v["content"]) for k, v in ((x["key"], x["value"]) for x in lines[1:])
            if k == "file"} | {"(summary)": lines[0]["value"]["summary"].encode()}


def test_push_sends_the_exported_folder_to_the_hub(runs, tmp_path, hub):
    endpoint, requests = hub
    info = push_run(str(runs["lora"]), "me/arena", private=True, token="hf_test", endpoint=endpoint)
    assert info["repo"] == f"{endpoint}/me/arena" and info["commit"].endswith("/commit/" + "a" * 40)
    paths = [p for p, _, _ in requests]
    assert paths == ["/api/repos/create", "/api/validate-yaml", "/api/models/me/arena/preupload/main",
                     "/api/models/me/arena/commit/main"]
    create = json.loads(requests[0][2])
    assert create == {"name": "arena", "organization": "me", "visibility": "private", "type": "model"}
    assert all(h.get("authorization", h.get("Authorization")) == "Bearer hf_test" for _, h, _ in requests)
    files = _uploaded(requests)
    assert files.pop("(summary)").decode() == f"{runs['lora'].name} (arena-replicator export)"
    export_run(str(runs["lora"]), tmp_path / "local")
    assert set(files) == {p.name for p in (tmp_path / "local").iterdir()}
    for name in ("adapter_config.json", "adapter_model.safetensors", "README.md", "resolved.yaml"):
        assert files[name] == (tmp_path / "local" / name).read_bytes(), name


def test_push_and_export_from_the_command_line(runs, tmp_path, hub):
    endpoint, requests = hub
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(runs["lora"]), str(tmp_path / "hub")])
    assert result.exit_code == 0, result.output
    assert f"exported {runs['lora'].name} (peft_lora) to {tmp_path / 'hub'}" in result.output
    result = runner.invoke(app, ["push", str(runs["lora"]), "me/arena", "--endpoint", endpoint,
                                 "--token", "t"])
    assert result.exit_code == 0, result.output
    assert f"pushed {runs['lora'].name} to {endpoint}/me/arena" in result.output
    assert json.loads(requests[0][2])["visibility"] == "public"
    # the hub says no: the error names the repo, no traceback
    result = runner.invoke(app, ["push", str(runs["lora"]), "me/missing", "--endpoint",
                                 endpoint + "/nothing"])
    assert result.exit_code == 2 and "error: push to me/missing: " in result.output
    assert "Traceback" not in result.output


def test_push_offline_says_so_before_any_work(runs, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ReplicatorError, match="push to me/arena: HF_HUB_OFFLINE is set"):
        push_run(str(runs["lora"]), "me/arena")


def test_a_head_transformers_cannot_hold_is_exported_and_said(runs, tmp_path):
    """An MLP head (2nd place's): saved with the adapters all the same; the card says a plain
    AutoModelForSequenceClassification cannot hold it and points to `replicate predict`."""
    run_dir = _run(runs["root"] / "mlp", name="tinymlp",
                   plugins={**TINY_RECIPE["plugins"], "head": {"use": "mlp_head"}})
    info = export_run(str(run_dir), tmp_path / "hub")
    assert info["kind"] == "peft_lora" and not info["plain_head"]
    card = (tmp_path / "hub" / "README.md").read_text()
    assert "**The head is not a plain `Linear(hidden, 3)`**" in card and "plugin `mlp_head`" in card
    assert json.loads((tmp_path / "hub" / "export.json").read_text())["plain_head"] is False
