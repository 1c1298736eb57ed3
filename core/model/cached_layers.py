"""Frozen bottom layers computed once per text: ``model.cache_frozen`` with ``model.freeze_layers: N``.

The first ``N`` decoder layers (and the embeddings) of a model whose bottom is frozen compute the same
states for the same token ids in every epoch, every fold and every variant that does not change the
text (a loss, a learning rate, the head, LoRA on the layers above). :class:`StateCache` keeps the input of
layer ``N`` per token sequence (on disk under ``REPLICATOR_CACHE/states/<key>``, the key covering the
weights, the model config, ``N``, dtype, device and :data:`CACHE_VERSION`), and :func:`cached_bottom`
makes a model read them: its input embedding module is replaced by a lookup of the cached states and
its first ``N`` layers by pass-throughs (the layer list keeps its length, so parameter names, layer types
and rotary settings of the layers above are untouched). Training and prediction then cost the top layers
only; the numbers are those of the whole model (``tests/model/test_cached_layers.py`` compares them).

Sequences are computed by :meth:`StateCache.ensure` before the passes that read them (a sequence the
lookup does not find is an error, never a silent recomputation inside a training step), right-padded,
causal: a position's state depends only on the tokens up to it, so padding does not change them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from replicator.core.errors import ReplicatorError
from replicator.core.tokens.batches import collate
from replicator.core.util.atomic import atomic_write_bytes
from replicator.core.util.layout import cache_root

log = logging.getLogger(__name__)

#: bump when what is cached changes: the cache key includes it
CACHE_VERSION = 1
#: sequences per shard file (an interrupted encoding keeps what it wrote)
SHARD = 256


def weights_digest(folder: Path) -> str:
    """sha1 over a model folder's config and weight files (names and bytes)."""
    h = hashlib.sha1()
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".json", ".gguf"))
    for p in files:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                h.update(block)
    return h.hexdigest()


def sequence_key(ids) -> str:
    """The cache key of one token sequence (its ids as int32 bytes)."""
    return hashlib.sha1(np.asarray(ids, dtype=np.int32).tobytes()).hexdigest()


def decoder(model):
    """The decoder module (the one holding ``embed_tokens``, ``layers`` and ``norm``) inside a sequence
    classifier, peft-wrapped or not."""
    for _, m in model.named_modules():
        if all(hasattr(m, a) for a in ("embed_tokens", "layers", "norm")):
            return m
    raise ReplicatorError(f"model.cache_frozen: {type(model).__name__} has no decoder with embed_tokens, "
                          "layers and norm (a decoder-only transformers model has)")


def cache_key(path: str, model, n: int) -> str:
    """What the states of the first ``n`` layers depend on: the weights (a local folder's bytes, else the
    hub id), the model config (attention switches included), the attention kernel, dtype, device, ``n``."""
    folder = Path(path)
    weight = next(model.parameters())
    config = model.config.to_dict()
    for k in ("id2label", "label2id", "num_labels", "problem_type", "architectures", "pad_token_id"):
        config.pop(k, None)
    key = json.dumps({"model": weights_digest(folder) if folder.is_dir() else path, "config": config,
                      "attn": getattr(model.config, "_attn_implementation", None), "n": n,
                      "dtype": str(weight.dtype), "device": weight.device.type, "version": CACHE_VERSION},
                     sort_keys=True, default=str)
    return hashlib.sha1(key.encode()).hexdigest()[:16]


@functools.cache
def _pass_through_class():
    import torch

    class PassThrough(torch.nn.Module):
        """Stands in for a layer whose work is cached or not wanted: its hidden states unchanged."""

        def forward(self, hidden_states, *args, **kwargs):
            return hidden_states

    return PassThrough


def _pass_through():
    """A decoder layer's stand-in that returns its input (:func:`_pass_through_class`)."""
    return _pass_through_class()()


class StateCache:
    """The input of layer ``n`` of each token sequence seen, in memory and in ``folder`` (safetensors
    shards of bf16/fp32 tensors named by :func:`sequence_key`)."""

    def __init__(self, folder: Path, n: int):
        from safetensors.torch import load_file

        self.folder, self.n = Path(folder), n
        self.states: dict[str, object] = {}
        self.computed = 0
        for shard in sorted(self.folder.glob("*.safetensors")) if self.folder.exists() else []:
            try:
                self.states.update(load_file(str(shard)))
            except Exception as e:  # noqa: BLE001  (a damaged shard is computed again, said so)
                log.warning("state cache %s unreadable (%s): its sequences are computed again", shard, e)

    @classmethod
    def for_model(cls, path: str, model, n: int) -> StateCache:
        return cls(cache_root() / "states" / cache_key(path, model, n), n)

    def __contains__(self, ids) -> bool:
        return sequence_key(ids) in self.states

    def get(self, ids):
        try:
            return self.states[sequence_key(ids)]
        except KeyError:
            raise ReplicatorError(f"model.cache_frozen: a sequence of {len(ids)} tokens is not in the state "
                                  f"cache {self.folder} (its states are computed before the pass that reads "
                                  "them: a bug)") from None

    def ensure(self, model, seqs, batch_tokens: int, pad_id: int, progress: bool = True,
               desc: str = "states") -> int:
        """Compute and store the states of the sequences of ``seqs`` not cached yet (length-sorted batches of
        at most ``batch_tokens`` padded tokens, a shard written every :data:`SHARD` sequences); how many."""
        import torch

        todo: dict[str, list[int]] = {}
        for s in seqs:
            k = sequence_key(s)
            if k not in self.states:
                todo.setdefault(k, list(map(int, s)))
        if not todo:
            return 0
        t0, keys = time.time(), sorted(todo, key=lambda k: len(todo[k]))
        log.info("frozen layers 0-%d: computing the states of %d sequence(s) (%d tokens), cache %s",
                 self.n - 1, len(keys), sum(len(todo[k]) for k in keys), self.folder)
        device = next(model.parameters()).device
        pending: dict[str, object] = {}
        with torch.inference_mode(), bottom_only(model, self.n) as inner, \
                tqdm(total=len(keys), desc=desc, disable=not progress, mininterval=5, file=sys.stderr) as bar:
            i = 0
            while i < len(keys):
                j = i + 1
                while j < len(keys) and len(todo[keys[j]]) * (j - i + 1) <= batch_tokens:
                    j += 1  # sorted by length: the j-th is the longest so far
                batch = keys[i:j]
                ids, mask = collate([todo[k] for k in batch], pad_id, device)
                hidden = inner(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
                for r, k in enumerate(batch):
                    pending[k] = hidden[r, : len(todo[k])].to("cpu").clone()
                bar.update(len(batch))
                i = j
                if len(pending) >= SHARD:
                    self._write(pending)
                    pending = {}
        self._write(pending)
        self.computed += len(keys)
        log.info("frozen layers: %d sequence(s) in %.0f s", len(keys), time.time() - t0)
        return len(keys)

    def _write(self, new: dict) -> None:
        if not new:
            return
        from safetensors.torch import save as save_bytes

        self.states.update(new)
        name = hashlib.sha1("".join(sorted(new)).encode()).hexdigest()[:16]
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.folder / f"{name}.safetensors", save_bytes(new))


@contextlib.contextmanager
def bottom_only(model, n: int) -> Iterator[object]:
    """Inside the block, the model's decoder computes the input of layer ``n``: the layers from ``n`` on
    and the final norm pass through. Yields the decoder."""
    import torch

    inner = decoder(model)
    layers, norm = list(inner.layers), inner.norm
    try:
        for i in range(n, len(layers)):
            inner.layers[i] = _pass_through()
        inner.norm = torch.nn.Identity()
        yield inner
    finally:
        for i in range(n, len(layers)):
            inner.layers[i] = layers[i]
        inner.norm = norm


@contextlib.contextmanager
def cached_bottom(model, cache: StateCache) -> Iterator[None]:
    """Inside the block, ``model`` reads the states of its first ``cache.n`` layers from ``cache`` (every
    sequence it is given must be there: :meth:`StateCache.ensure`) and computes only the layers above.
    Rows are right-padded; a row's length is its attention mask's sum."""
    import torch

    inner = decoder(model)
    layers, embed = list(inner.layers), inner.embed_tokens
    lengths: list[int | None] = [None]

    class Lookup(torch.nn.Module):
        def forward(self, input_ids):
            rows = input_ids.tolist()
            n_rows, width = input_ids.shape
            found = [cache.get(ids[: (lengths[0][r] if lengths[0] is not None else width)])
                     for r, ids in enumerate(rows)]
            out = torch.zeros(n_rows, width, found[0].shape[-1], dtype=found[0].dtype,
                              device=input_ids.device)
            for r, states in enumerate(found):
                out[r, : len(states)] = states.to(input_ids.device)
            return out

    def take_mask(module, args, kwargs):
        mask = kwargs.get("attention_mask")
        lengths[0] = None if mask is None or mask.dim() != 2 else mask.sum(1).tolist()

    hook = inner.register_forward_pre_hook(take_mask, with_kwargs=True)
    try:
        inner.embed_tokens = Lookup()
        for i in range(cache.n):
            inner.layers[i] = _pass_through()
        yield
    finally:
        hook.remove()
        inner.embed_tokens = embed
        for i in range(cache.n):
            inner.layers[i] = layers[i]
