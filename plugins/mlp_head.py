"""The 2nd place's re-initialised MLP classification head."""

from __future__ import annotations

import dataclasses

from replicator.core.hookspecs import hookimpl
from replicator.core.params import param


@dataclasses.dataclass(frozen=True)
class MLPHead:
    """Replace the model's ``score`` by a freshly initialised MLP:
    ``Dropout(p) -> Linear(h, h/2) -> Dropout(p) -> GELU -> Linear(h/2, 3)`` (2nd place [P2],
    [R2] ``configs/stage1/m0.py``, p = 0.1, built in bf16 there; here in the backbone's dtype).

    Reason given by 2nd place: the default head's init "gives high loss on early iterations" [P2].
    Weights use PyTorch's default ``nn.Linear`` init, as in [R2]; both Linear layers have a bias
    (as in [R2]). Like every head, the module is applied to every position and the runner's model
    pools the last non-pad token.
    """

    dropout: float = param(0.1, "dropout probability before each Linear layer ([R2]: 0.1)", ge=0, lt=1)

    @hookimpl
    def head(self, hidden_size, num_labels, model):
        import torch

        mid = hidden_size // 2
        return torch.nn.Sequential(
            torch.nn.Dropout(self.dropout),
            torch.nn.Linear(hidden_size, mid),
            torch.nn.Dropout(self.dropout),
            torch.nn.GELU(),
            torch.nn.Linear(mid, num_labels),
        )
