"""What identifies tokenised rows in the token cache (:mod:`replicator.core.tokens.store`): the folder key
and the row key.

Every stage, recipe and variant that tokenises the same way shares one folder,
``<artifacts root>/cache/tokens/<folder key>/`` (artifacts root: ``REPLICATOR_ARTIFACTS``, default
``artifacts``, as :func:`replicator.core.util.layout.artifacts_root`). The **folder key** hashes what
decides a row's tokens besides the row itself:

* the ``prompt_format`` plugin block as built: its catalogue name and every field, defaults included
  (:func:`replicator.core.config.canonical.plain`); a changed ``truncate`` or ``show_lengths`` is a new
  folder, the rest of the recipe (data split, head, loss, calibration, TTA) is not part of it;
* the format's code: the source file of the plugin class and of the shared helpers in
  ``replicator.core.lib``, and the plugin's distribution and version (an edited format never reads
  tokens of the old code);
* the tokenizer: a hash of its serialised state (fast tokenizers: ``backend_tokenizer.to_str()``;
  others: the sentencepiece model or the vocabulary), its class, special tokens and their ids, added
  tokens, chat template, sides and BOS/EOS switches; computed once per tokenizer object;
* the token budget ``max_length``, and :data:`VERSION` of this layout.

``meta.json`` in the folder shows those parts. Inside the folder, a **row key** is a 128-bit hash
(sha256, truncated) of the row's input fields: every field except :data:`NOT_INPUT` (``id``,
``label``, ``teacher``, ``pair``, weight-like fields, ``group``: a hash of the prompt, ``source``:
provenance), plus the ``swapped`` flag and the TTA ``view`` name (the identity view counts as no
view: it is the row unchanged). So the cache is keyed by content: the same texts under another id
are a hit, any text change is a new key, a field the list does not name (model names, a new field)
is part of the key.
A format that read one of :data:`NOT_INPUT` would get stale tokens: none of the built-in ones does.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import weakref
from pathlib import Path
from typing import Any

from replicator.core.config.canonical import plain
from replicator.core.errors import ReplicatorError

#: the layout of the folders and shards; part of the folder key
VERSION = 1
#: row fields no prompt format reads: left out of the row key (``swapped`` and ``view`` go in on their own)
NOT_INPUT = frozenset({"id", "label", "teacher", "pair", "weight", "weights", "sample_weight", "loss_weight",
                       "group", "source", "swapped", "view"})
#: views that leave the row as it is (:class:`replicator.core.predict.views.Identity`): keyed as no view
IDENTITY_VIEWS = frozenset({"", "identity"})


_TOKENIZER_HASHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_TOKENIZER_HASHES_BY_ID: dict[int, tuple[Any, str]] = {}  # tokenizers that refuse weak references
_CODE_HASHES: dict[type, str] = {}


def _tokenizer_state(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return backend.to_str()
    sp = getattr(tokenizer, "sp_model", None)
    if sp is not None and hasattr(sp, "serialized_model_proto"):
        return hashlib.sha256(sp.serialized_model_proto()).hexdigest()
    if hasattr(tokenizer, "get_vocab"):
        return json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=True)
    raise ReplicatorError(f"token cache: cannot identify the tokenizer {type(tokenizer).__name__} (no "
                          "backend_tokenizer, sentencepiece model or vocabulary); "
                          "set REPLICATOR_TOKEN_CACHE=off")


def tokenizer_hash(tokenizer) -> str:
    """sha256 of the tokenizer's serialised state and settings; once per tokenizer object."""
    try:
        return _TOKENIZER_HASHES[tokenizer]
    except KeyError:
        pass
    except TypeError:  # not weak-referenceable
        held = _TOKENIZER_HASHES_BY_ID.get(id(tokenizer))
        if held is not None and held[0] is tokenizer:
            return held[1]
    extra = {
        "class": f"{type(tokenizer).__module__}.{type(tokenizer).__qualname__}",
        "special_tokens": {k: str(v)
                           for k, v in (getattr(tokenizer, "special_tokens_map", None) or {}).items()},
        "special_ids": {k: getattr(tokenizer, f"{k}_token_id", None)
                        for k in ("bos", "eos", "pad", "unk", "sep", "cls")},
        "added": sorted((str(k), v) for k, v in (tokenizer.get_added_vocab()
                                                 if hasattr(tokenizer, "get_added_vocab") else {}).items()),
        "chat_template": getattr(tokenizer, "chat_template", None),
        **{k: getattr(tokenizer, k, None)
           for k in ("padding_side", "truncation_side", "add_bos_token", "add_eos_token")},
    }
    h = hashlib.sha256(_tokenizer_state(tokenizer).encode("utf-8", "surrogatepass"))
    h.update(json.dumps(extra, sort_keys=True, default=str).encode("utf-8", "surrogatepass"))
    digest = h.hexdigest()
    try:
        _TOKENIZER_HASHES[tokenizer] = digest
    except TypeError:
        _TOKENIZER_HASHES_BY_ID[id(tokenizer)] = (tokenizer, digest)
    return digest


def _code_hash(cls: type) -> str:
    """sha256 over the source file of ``cls`` and the files of ``replicator.core.lib`` (format helpers)."""
    if cls not in _CODE_HASHES:
        h = hashlib.sha256()
        lib = sorted(str(p) for p in (Path(__file__).parent.parent / "lib").glob("*.py"))
        files = [inspect.getsourcefile(cls), *lib]
        for f in files:
            if f is None:
                h.update(f"<no source for {cls.__qualname__}>".encode())
                continue
            h.update(Path(f).name.encode() + b"\0")
            h.update(Path(f).read_bytes())
        _CODE_HASHES[cls] = h.hexdigest()
    return _CODE_HASHES[cls]


def format_block(plugins) -> tuple[str, Any, dict]:
    """(alias, instance, block) of the run's single ``prompt_format`` plugin; block = catalogue name +
    every field as built."""
    providers = plugins.providers("prompt_format")
    if len(providers) != 1:
        names = ", ".join(f"{a} ({getattr(p, '_use', type(p).__name__)})" for a, p in providers) or "none"
        raise ReplicatorError(f"token cache: the hook 'prompt_format' needs exactly one plugin, found "
                              f"{len(providers)}: {names}")
    alias, inst = providers[0]
    return alias, inst, {"use": getattr(inst, "_use", type(inst).__name__), **plain(inst)}


def folder_description(plugins, tokenizer, max_length: int) -> dict:
    """What the folder key hashes (also written to ``meta.json``)."""
    alias, inst, block = format_block(plugins)
    dist = (getattr(plugins, "origins", None) or {}).get(alias, (None, None))
    return {"version": VERSION, "prompt_format": block, "format_code": _code_hash(type(inst)),
            "format_distribution": list(dist), "tokenizer": tokenizer_hash(tokenizer),
            "max_length": int(max_length)}


def folder_key(description: dict) -> str:
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()[:24]


def view_name(row: dict) -> str:
    view = row.get("view") or ""
    return "" if view in IDENTITY_VIEWS else str(view)


def row_key(row: dict) -> bytes:
    """16-byte key of a row's content: its input fields (all but :data:`NOT_INPUT`), ``swapped`` and the
    view (sha256 over length-prefixed parts, truncated: one hash call per row)."""
    parts = [b"swapped=%d\0view=" % bool(row.get("swapped", False)),
             view_name(row).encode("utf-8", "surrogatepass")]
    for name in sorted(row):
        if name in NOT_INPUT:
            continue
        value = row[name]
        parts.append(b"\0F" + name.encode("utf-8", "surrogatepass") + b"=")
        if isinstance(value, list) and all(v is None or isinstance(v, str) for v in value):
            parts.append(b"L%d" % len(value))  # turns: each length-prefixed, None apart from ""
            for v in value:
                if v is None:
                    parts.append(b"N")
                else:
                    b = v.encode("utf-8", "surrogatepass")
                    parts.append(b"S%d:" % len(b))
                    parts.append(b)
        elif isinstance(value, str):
            b = value.encode("utf-8", "surrogatepass")
            parts.append(b"S%d:" % len(b))
            parts.append(b)
        else:
            b = json.dumps(value, sort_keys=True, ensure_ascii=False, default=repr).encode(
                "utf-8", "surrogatepass")
            parts.append(b"J%d:" % len(b))
            parts.append(b)
    return hashlib.sha256(b"".join(parts)).digest()[:16]
