"""A head that reads each response's own tokens: mean-pooled over response A and over response B."""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import numpy as np

from replicator.core.errors import ReplicatorError
from replicator.core.hookspecs import hookimpl
from replicator.core.params import param


@dataclasses.dataclass(frozen=True)
class ResponsePoolHead:
    """Pool the last layer's states over each response's tokens, not at the last token (our design; no
    write-up pooled this way: every solution's head reads the last token [P1]/[P2]/[P3]).

    Why: on 2 CPU cores the smoke recipe freezes most of the model, and a linear probe of the last token's
    state of the frozen Gemma-3-270M predicts the arena labels worse than uniform (grouped CV 1.09 - 1.11,
    issue 22), while the same model's states mean-pooled over each response, read apart, carry what the
    `cpu` recipe's head finds beyond length and style. Here both responses stay in the one pair prompt.

    With ``a``, ``b`` the mean of the states of A's and of B's tokens (every round's) and ``d = a - b``:
    ``logit_A = w . d``, ``logit_B = -w . d`` and ``logit_tie = v . |d| + u . (a + b) / 2 + c``: swapping the
    responses swaps the two logits (up to what the position of each response in the prompt changes), and
    a tie depends on how different and how good the two are. By default all weights start at zero (the
    uniform prediction, or the ``model.offset`` baseline's); ``init: model`` draws them as transformers
    draws a new head's; ``init: lp`` (LP-FT, our option) starts them at zero, and the runner then fits them
    by a linear probe of the model as loaded on the training rows, with the offset added
    (core/stages/linear_probe.py), before fine-tuning. Spans are found in the token ids by the prompt
    format's markers, each tokenised apart as ``plain_turns`` writes its pieces: a response runs from the
    end of its marker to the next marker (``b_marker`` after A; after B, the next of ``stops`` or of
    ``a_marker``). A row without both markers is an error, never a silent fallback to the last token. The
    rows of a batch must be right-padded, one per sequence (``train.packed`` is refused).
    """

    a_marker: str = param("\n\nResponse A: ", "text the prompt format writes before response A")
    b_marker: str = param("\n\nResponse B: ", "text the prompt format writes before response B")
    stops: list[str] = param(["\n## Round", "\nLength in words:", "\nWhich response"],
                             "texts that end response B (a round header, the stated lengths, the question)")

    #: truncation policies this head cannot read (the shared truncate toggles say "not applicable")
    truncation_refused = {"keep_start": "a text over the budget loses response B (and its marker)"}

    init: Literal["zeros", "model", "lp"] = param(
        "zeros", "zeros (start at the uniform prediction, or at the offset's) | model (normal, std = the "
                 "model config's initializer_range, as transformers starts its heads) | lp (a linear probe "
                 "of the model's pooled states on the training rows, with the offset, before fine-tuning)")

    @hookimpl
    def head(self, hidden_size, num_labels, model):
        if num_labels != 3:
            raise ReplicatorError(f"response_pool: a 3-way head (A, B, tie); asked for {num_labels} outputs")
        head = _module_class()(hidden_size, self)
        if self.init == "model":
            import torch

            std = getattr(getattr(model, "config", None), "initializer_range", 0.02)
            for p in head.parameters():
                if not p.is_meta:
                    torch.nn.init.normal_(p, std=std)
        parts = ("embed_tokens", "layers", "norm")  # the decoder, inside the classifier
        dec = None if model is None else next(
            (m for _, m in model.named_modules() if all(hasattr(m, a) for a in parts)), None)
        if dec is not None:
            dec.register_forward_pre_hook(head.spans.capture, with_kwargs=True)
        return head


class _Spans:
    """What the decoder's pre-hook saw (the batch's span masks), shared by the head and the copy peft keeps
    of it (``modules_to_save``): a deep copy returns the same object."""

    def __init__(self, plugin: ResponsePoolHead):
        self.plugin = plugin
        self.ids: dict[str, list[list[int]]] | None = None
        self.masks = None

    def __deepcopy__(self, memo):
        return self

    def bind(self, tokenizer) -> None:
        """Tokenise the markers (as the prompt format tokenises each piece: alone, no special tokens)."""
        def enc(text):
            ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
            if not ids:
                raise ReplicatorError(f"response_pool: marker {text!r} is no tokens")
            return ids

        p = self.plugin
        self.ids = {"a": [enc(p.a_marker)], "b": [enc(p.b_marker)], "stop": [enc(s) for s in p.stops]}

    def capture(self, module, args, kwargs):
        import torch

        ids = kwargs.get("input_ids", args[0] if args else None)
        if kwargs.get("position_ids") is not None and ids is not None and ids.shape[0] == 1:
            raise ReplicatorError("response_pool: rows packed into one sequence (train.packed) cannot be "
                                  "pooled per response; leave train.packed off")
        if ids is None:
            raise ReplicatorError("response_pool: the model was called without input_ids")
        if self.ids is None:
            raise ReplicatorError("response_pool: the head was never given the tokenizer (load_model does)")
        mask = kwargs.get("attention_mask")
        lengths = mask.sum(1).tolist() if mask is not None and mask.dim() == 2 else None
        a, b = response_masks(ids.detach().cpu().numpy(), self.ids, lengths)
        self.masks = (torch.as_tensor(a, device=ids.device), torch.as_tensor(b, device=ids.device))


def _find(row: np.ndarray, needles: list[list[int]], start: int) -> tuple[int, int]:
    """(position, length) of the first occurrence at or after ``start`` of any of ``needles``; (-1, 0)."""
    best = (-1, 0)
    for n in needles:
        k = len(n)
        if len(row) - start < k:
            continue
        hits = np.flatnonzero(np.all(np.lib.stride_tricks.sliding_window_view(row[start:], k) == n, axis=1))
        if len(hits) and (best[0] < 0 or start + hits[0] < best[0]):
            best = (start + int(hits[0]), k)
    return best


def response_masks(ids: np.ndarray, markers: dict, lengths: list[int] | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(B, T) boolean masks of the tokens of response A and of response B in each row of ``ids``
    (right-padded: row ``r`` holds ``lengths[r]`` tokens; None = all)."""
    a_mask = np.zeros(ids.shape, dtype=bool)
    b_mask = np.zeros(ids.shape, dtype=bool)
    for r, row in enumerate(ids):
        row = row[: lengths[r]] if lengths is not None else row
        pos, found = 0, 0
        while True:
            ia, ka = _find(row, markers["a"], pos)
            if ia < 0:
                break
            ib, kb = _find(row, markers["b"], ia + ka)
            if ib < 0:
                break
            a_mask[r, ia + ka:ib] = True
            end, _ = _find(row, markers["stop"] + markers["a"], ib + kb)
            b_mask[r, ib + kb:end if end >= 0 else len(row)] = True
            found += 1
            pos = max(end, ib + kb)
        if not found:
            raise ReplicatorError(f"response_pool: row {r} of the batch has no response A marker followed by "
                                  "a response B marker; the prompt format must write them (plain_turns does) "
                                  "and its truncation keep both: `truncate: keep_start` (the truncate_end "
                                  "toggle, longest_first's off side) cuts response B off a text over the "
                                  "budget, `longest_first` keeps both")
    return a_mask, b_mask


def _zero_linear(n_in: int, bias: bool):
    import torch

    layer = torch.nn.Linear(n_in, 1, bias=bias)
    torch.nn.init.zeros_(layer.weight)
    if bias:
        torch.nn.init.zeros_(layer.bias)
    return layer


@functools.cache
def _module_class():
    """The module of :class:`ResponsePoolHead` (defined on first use: torch is imported lazily)."""
    import torch

    class ResponsePool(torch.nn.Module):
        """(B, T, H) states -> (B, T, 3), every position the row's pooled logits (the sequence classifier
        then reads the last non-pad one)."""

        def __init__(self, hidden_size: int, plugin: ResponsePoolHead):
            super().__init__()
            self.spans = _Spans(plugin)
            self.diff = _zero_linear(hidden_size, bias=False)
            self.tie = _zero_linear(2 * hidden_size, bias=True)
            self.linear_probe = plugin.init == "lp"  # the runner fits it before training
            self.emit_features = False  # set by the probe: forward gives [d, |d|, (a + b) / 2], not logits

        def load_probe(self, w, v, c: float) -> None:
            """Set the weights to a pair probe's (core/stages/linear_probe.fit_pair_probe, raw units)."""
            with torch.no_grad():
                for p, val in ((self.diff.weight, [w]), (self.tie.weight, [v]), (self.tie.bias, [c])):
                    p.copy_(torch.as_tensor(val, dtype=p.dtype).reshape(p.shape))

        def attach_tokenizer(self, tokenizer) -> None:
            self.spans.bind(tokenizer)

        def forward(self, hidden):
            if self.spans.masks is None or self.spans.masks[0].shape != hidden.shape[:2]:
                raise ReplicatorError("response_pool: no span masks for this batch (the decoder's pre-hook "
                                      "did not run on these input ids)")
            h = hidden.float()

            def pool(mask):
                m = mask.to(h.dtype)
                return (m.unsqueeze(-1) * h).sum(1) / m.sum(1, keepdim=True).clamp(min=1.0)

            a, b = pool(self.spans.masks[0]), pool(self.spans.masks[1])
            d = a - b
            if self.emit_features:
                feats = torch.cat([d, d.abs(), (a + b) / 2], -1)
                return feats.unsqueeze(1).expand(-1, hidden.shape[1], -1)
            la = self.diff(d.to(self.diff.weight.dtype)).float()
            lt = self.tie(torch.cat([d.abs(), (a + b) / 2], -1).to(self.tie.weight.dtype)).float()
            logits = torch.cat([la, -la, lt], -1).to(hidden.dtype)
            return logits.unsqueeze(1).expand(-1, hidden.shape[1], -1)

    return ResponsePool
