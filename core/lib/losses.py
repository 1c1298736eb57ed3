"""What the loss plugins share: which logit columns are the preference logits."""

from __future__ import annotations

#: the three preference classes, in label order: A wins, B wins, tie
NUM_PREFERENCE = 3


def preference_logits(logits):
    """The first three columns, the preference logits (columns past them belong to auxiliary heads, see
    the ``head`` hookspec)."""
    return logits[:, :NUM_PREFERENCE]
