"""Conversations to turns: role/content message lists (the arena release schema, UltraFeedback's
binarized ``chosen``/``rejected``) parsed into rounds, and turn lists padded so rounds align.

Rules of :func:`parse_conversation`:

* Each ``user`` (or ``human``) message opens a round; the ``assistant`` (``gpt``, ``bot``)
  messages after it, up to the next user message, are that round's response (several are joined
  with a blank line; none -> ``""``). ``system`` messages are skipped. Roles are compared
  case-insensitively after stripping.
* A JSON string is decoded first (CSV files store the list JSON-encoded).
* ``null`` content -> ``""`` and lone UTF-16 surrogates -> U+FFFD, both counted in the returned
  repair counts; content that is not a string, an unknown role, an assistant message before any
  user message, or no user message at all is an error (returned, not raised, so the caller can
  name the file, row and field).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from replicator.core.data.files import clean_text

USER_ROLES = {"user", "human"}
ASSISTANT_ROLES = {"assistant", "gpt", "bot"}


def parse_conversation(conv) -> tuple[list[str], list[str], dict, str | None]:
    """(user turns, assistant turns aligned to them, repair counts ``{"null", "surrogate"}``, error)."""
    if isinstance(conv, str):
        try:
            conv = json.loads(conv, strict=False)
        except json.JSONDecodeError as e:
            return [], [], {}, f"invalid JSON ({e.msg} at char {e.pos})"
    if not isinstance(conv, list):
        return [], [], {}, f"expected a list of {{role, content}} messages, got {type(conv).__name__}"
    users: list[str] = []
    answers: list[list[str]] = []
    fixes = {"null": 0, "surrogate": 0}
    for k, m in enumerate(conv):
        if not isinstance(m, dict):
            err = f"message {k} is a {type(m).__name__}, expected an object with role and content"
            return [], [], {}, err
        role = str(m.get("role") or "").strip().lower()
        content = m.get("content")
        if content is None:
            fixes["null"] += 1
        elif not isinstance(content, str):
            return [], [], {}, f"message {k}: content is a {type(content).__name__}, expected a string"
        text = clean_text(content)
        if text != (content or ""):
            fixes["surrogate"] += 1
        if role in USER_ROLES:
            users.append(text)
            answers.append([])
        elif role in ASSISTANT_ROLES:
            if not users:
                return [], [], {}, f"message {k}: assistant message before any user message"
            answers[-1].append(text)
        elif role == "system":
            continue
        else:
            return [], [], {}, f"message {k}: unknown role {m.get('role')!r} (expected user or assistant)"
    if not users:
        return [], [], {}, "no user message"
    return users, ["\n\n".join(a) for a in answers], fixes, None


def pad_turns(prompt: Sequence[str], response_a: Sequence[str],
              response_b: Sequence[str]) -> tuple[list[str], list[str], list[str], bool]:
    """The three turn lists padded at the end with ``""`` to the longest one's length, so the rounds
    align (the row schema's rule), and whether any list was padded."""
    n = max(len(prompt), len(response_a), len(response_b))
    padded = len({len(prompt), len(response_a), len(response_b)}) > 1
    p, a, b = (list(xs) + [""] * (n - len(xs)) for xs in (prompt, response_a, response_b))
    return p, a, b, padded
