"""Prediction with test-time augmentation: each ``tta`` view's probabilities, inverted back to the
original A/B order, and their mean ``tta``. One pass per view over length-sorted batches sized by
a token budget."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
from tqdm.auto import tqdm

from replicator.core.config.canonical import plain
from replicator.core.tokens.batches import Encoder, collate, forward_logits
from replicator.core.util.distributed import gather_rows, shard

IDENTITY = "identity"


class Identity:
    """The view that changes nothing (always first)."""

    name = IDENTITY

    @staticmethod
    def apply(row):
        return row

    @staticmethod
    def invert(probs):
        return probs


def view_owners(plugins) -> dict[str, tuple[list | None, object]]:
    """``{view name: (owner block, view)}``: the identity view (no owner), then each ``tta`` plugin's views
    in recipe order, with the block that made them (``[alias, {use, every field}]``: part of the view's
    cache key, :mod:`replicator.core.stages.steps`)."""

    out: dict[str, tuple[list | None, object]] = {IDENTITY: (None, Identity())}
    for alias, inst in plugins.providers("tta"):
        block = {"use": inst._use, **{f.name: plain(getattr(inst, f.name)) for f in dataclasses.fields(inst)
                                      if f.init and not f.name.startswith("_")}}
        for views in plugins._only("tta", alias)():  # pluggy leaves out a None result
            for view in views or []:
                out[view.name] = ([alias, block], view)
    return out


def views_of(plugins) -> list:
    """The identity view, then every ``tta`` plugin's views in recipe order."""
    return [view for _, view in view_owners(plugins).values()]


def _predict_view(model, tokenizer, encoder, rows, view, max_length: int, batch_tokens: int, progress: bool,
                  offset=None):
    """One view's probabilities of ``rows``; under several processes each predicts every N-th row of
    the length-sorted order and the parts are gathered (each row once). ``offset``: rows -> (B, 3)
    log-probabilities added to the logits (``model.offset``), of the rows as the view shows them."""
    import torch

    device = next(model.parameters()).device
    encoder.prepare(rows, max_length, views=[view], progress=progress)  # the token cache, all rows at once
    by_length = sorted(range(len(rows)), key=lambda i: -len(encoder(dict(view.apply(rows[i]), view=view.name),
                                                                    max_length)))
    order = [by_length[k] for k in shard(len(rows))]
    seqs = {j: encoder(dict(view.apply(rows[j]), view=view.name), max_length) for j in order}
    probs = np.zeros((len(order), 3), dtype=np.float64)
    bar = tqdm(total=len(order), desc=f"predict {view.name}", disable=not progress, dynamic_ncols=True,
               file=sys.stderr)
    i = 0
    with torch.inference_mode():
        while i < len(order):
            n = max(1, batch_tokens // max(len(seqs[order[i]]), 1))
            idx = order[i:i + n]
            ids, mask = collate([seqs[j] for j in idx], tokenizer.pad_token_id, device)
            logits = forward_logits(model, ids, mask)[:, :3].float()
            if offset is not None:
                logits = logits + torch.as_tensor(offset([view.apply(rows[j]) for j in idx]),
                                                  dtype=logits.dtype, device=logits.device)
            probs[i:i + len(idx)] = torch.softmax(logits, dim=-1).cpu().numpy()
            i += n
            bar.update(len(idx))
    bar.close()
    return view.invert(gather_rows(order, probs, len(rows)))


def predict_probs(model, tokenizer, plugins, rows, max_length: int, batch_tokens: int, progress: bool = True,
                  use_tta: bool = True, store=None, load=None, offset=None) -> dict[str, np.ndarray]:
    """Probabilities per view (already inverted to the original order) and their mean ``tta``.

    ``store`` (:class:`replicator.core.stages.steps.ViewStore`): views it holds are taken from it, the others
    computed and saved in it; ``load()`` gives ``(model, tokenizer)`` when ``model`` is None and a view
    has to be computed (a run whose every view is cached never loads a model)."""
    views = views_of(plugins) if use_tta else views_of(plugins)[:1]
    out, encoder = {}, None
    for v in views:
        got = store.load(v.name) if store is not None else None
        if got is not None:
            out[v.name] = got
            continue
        if model is None:
            model, tokenizer = load()
        if encoder is None:
            encoder = Encoder(plugins, tokenizer)
            model.eval()
        out[v.name] = _predict_view(model, tokenizer, encoder, rows, v, max_length, batch_tokens, progress,
                                    offset)
        if store is not None:
            store.save(v.name, out[v.name])
    out["tta"] = np.mean([out[v.name] for v in views], axis=0)
    return out
