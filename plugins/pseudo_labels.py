"""A pseudo-label pool: unlabelled rows that an earlier stage labels with its predicted probabilities.

The 2nd place trains a stage on 240k pairs soft-labelled by the mean of its stage-1 models
([P2], [R2] ``prepare_pseudo_label.py``); the 3rd place on ~500k generated pairs with soft
labels from its baseline ensemble, in 2 rounds ([P3]); the 4th place adds 30k UltraFeedback rows
labelled by its phase-1 model and retrains ([R4]); the 9th place ~45k lmsys-chat-1m pairs with
probability labels ([P9]). Their losses take the soft probabilities as targets ([R2], [R3m]).

Flow (two stages of one recipe)
-------------------------------
1. The labeller stage lists ``pseudo_labels`` with ``file`` and has ``outputs: [pool]``. This
   source feeds its ``pool`` split with the file's rows (labels, if any, are removed); after
   training, the runner predicts them (with TTA) and stores ``{row id: [pA, pB, pTie]}`` plus
   the rows.
2. The consumer stage lists ``pseudo_labels`` with ``from_stage: <labeller>``. This source then
   feeds its ``train`` split with those rows, labelled by the labeller's probabilities.

With ``from_stage`` set, the same block may also sit in the labeller stage itself (a recipe-wide
plugin block): while ``ctx.stage`` is ``from_stage`` it feeds ``pool``, in every other stage
``train``.

Rules
-----
* ``source``: instead of ``file``, the train rows of another data-source plugin with its default
  parameters (``hh_rlhf``, ``mt_bench``, ``alpacaeval_pairs``, ...), their labels removed: the pools the
  smoke and tiny runs use, since the real pools (lmsys-chat-1m pairs, generated pairs) are not offline.
* ``file``: a competition-format CSV (``id, prompt, response_a, response_b``; labels optional and
  ignored), validated by :func:`replicator.core.data.competition.read_competition_csv` (``require_labels``
  false). Ids become ``<id_prefix><id>`` so pool rows never collide with training ids (teacher
  probabilities and token caches are keyed by id).
* Pool rows whose prompt is in the validation split are dropped (count in the log), in both
  stages: the pool the labeller predicts is already free of its validation prompts, and the
  consumer drops those in *its* validation split.
* Labels: the stage's probabilities renormalised to sum 1 (``hard: true`` -> the argmax one-hot).
  ``min_confidence``: keep only rows whose largest probability is at least this value (0 = all;
  e.g. 0.6 keeps confident pseudo-labels only); the count dropped goes to the log. A prediction that
  is not three finite non-negative numbers with a positive sum -> ``ReplicatorError`` naming the
  stage and the row id (never NaN).
* ``from_stage`` a list: the labels are the mean of those stages' probabilities (2nd place: the mean of
  its three stage-1 models [R2]); every one of them must have predicted every pool row.
* ``from_stage`` set but that stage stored no pool predictions -> ``ReplicatorError`` naming the
  stage and telling to add ``outputs: [pool]`` to it (and to put it before this stage).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

from replicator.core.data.competition import read_competition_csv
from replicator.core.data.files import resolve_data_path
from replicator.core.data.splits import drop_valid_groups, sample_rows
from replicator.core.errors import ReplicatorError
from replicator.core.hookspecs import hookimpl
from replicator.core.lib import plugin_index, sources
from replicator.core.params import ParamError, did_you_mean, param
from replicator.core.rows import make_row

log = logging.getLogger(__name__)


def pseudo_label(probs, hard: bool) -> list[float] | None:
    """The training label of one prediction [pA, pB, pTie], or None when it is not a distribution."""
    try:
        p = [float(x) for x in probs]
    except (TypeError, ValueError):
        return None
    if len(p) != 3 or not all(math.isfinite(x) and x >= 0 for x in p) or sum(p) <= 0:
        return None
    s = sum(p)
    p = [x / s for x in p]
    return sources.hard_label(p) if hard else p


#: pseudo-label pools at full size, by recipe (`replicate plan`)
POOL_ROWS = {"2nd": (240_000, "[P2]"), "3rd": (500_000, "[P3]"), "9th": (45_000, "[P9]")}

@dataclasses.dataclass(frozen=True)
class PseudoLabels:
    """Unlabelled pool rows (competition CSV) fed to the ``pool`` split; with ``from_stage``, \
train rows soft-labelled by that stage.

    The pseudo-labelling of [P2], [P3], [R4], [P9]: soft labels = the earlier stage's predicted
    probabilities (``hard`` -> one-hot), optionally only confident ones (``min_confidence``);
    pool prompts in the validation split are dropped.
    """

    file: str | None = param(None, "competition-format CSV of unlabelled rows (id, prompt, response_a, "
                                   "response_b), relative to the data dir or absolute; needed in the "
                                   "labeller stage")
    source: str | None = param(None, "instead of file: the train rows of this data-source plugin (hh_rlhf, "
                                     "mt_bench, alpacaeval_pairs, ...), labels removed")
    from_stage: str | list[str] | None = param(
        None, "stage whose pool predictions label these rows (that stage needs outputs: [pool]); "
              "a list of stages: the mean of their predictions (2nd [R2]: the mean of three stage-1 "
              "models); null = only feed the pool split")
    hard: bool = param(False, "use the argmax one-hot of the predictions instead of the soft probabilities")
    min_confidence: float = param(0.0, "keep only rows whose largest predicted probability is >= this; "
                                       "0 = all", ge=0, le=1)
    id_prefix: str = param("pool-", "prefix added to the file's ids so they never collide with training ids")
    max_rows: int = sources.max_rows_field("use at most this many pool rows of the file, sampled with the "
                                           "seed; 0 = all")

    def __post_init__(self):
        sources.check_source_params(self, file_field=None)  # file may be null (consumer stage)
        if self.file is None and self.source is None and self.from_stage is None:
            raise ValueError("give file (the unlabelled pool CSV), source (a data-source plugin) or "
                             "from_stage (the stage that labelled it)")
        if self.file is not None and self.source is not None:
            raise ParamError("source", "give file or source, not both")
        if self.file == "":
            raise ParamError("file", "file must not be empty")
        if self.from_stage == "" or self.from_stage == [] or (
                isinstance(self.from_stage, list)
                and not all(isinstance(x, str) and x for x in self.from_stage)):
            raise ParamError("from_stage", "from_stage must be a stage name, a list of stage names, or null")
        if self.source is not None:
            self._source_plugin()  # an unknown name fails with the recipe, not mid-run

    def _source_plugin(self):
        """The ``source`` plugin with its default parameters, found by name in the plugin index."""
        plugins = plugin_index.catalogue()
        if self.source not in plugins or "data_sources" not in getattr(plugins[self.source], "__dict__", {}):
            names = [n for n in plugins if "data_sources" in plugins[n].__dict__ and n != "pseudo_labels"]
            raise ParamError("source", f"{self.source!r} is not a data-source plugin"
                             f"{did_you_mean(self.source, names)}; known: {', '.join(sorted(names))}")
        return plugins[self.source]()

    def _path(self, data_dir) -> Path | None:
        return None if self.file is None else resolve_data_path(data_dir, self.file)

    @hookimpl
    def data_check(self, data_dir) -> list[str]:
        if self.source is not None:
            return self._source_plugin().data_check(data_dir)
        return sources.missing_file(self._path(data_dir), "pseudo-label pool file not found",
                                    [f"put a competition-format CSV (id, prompt, response_a, response_b) at "
                                     f"{self.file} under REPLICATOR_DATA_DIR"])

    @hookimpl
    def data_files(self, data_dir) -> list[Path]:
        if self.source is not None:
            return self._source_plugin().data_files(data_dir)
        path = self._path(data_dir)
        return [] if path is None else [path]

    def _pool(self, ctx) -> list[dict]:
        if self.source is not None:
            return self._source_pool(ctx)
        path = self._path(ctx.data_dir)
        if path is None:
            raise ReplicatorError(f"pseudo_labels: stage {ctx.stage or '(main)'} feeds the pool split but "
                                  "no file is given; set file to a competition-format CSV of unlabelled rows")
        if not path.is_file():
            raise sources.missing_data_error(self.data_check(ctx.data_dir))

        def load() -> list[dict]:
            rows = read_competition_csv(path, require_labels=False, source="pseudo_labels")
            for r in rows:
                r["id"] = f"{self.id_prefix}{r['id']}"
                r["label"] = None
            return sample_rows(rows, self.max_rows, ctx.seed)

        rows = sources.cached(self, (sources.file_stamp([path]), ctx.seed), load)
        return drop_valid_groups(rows, ctx.held_out_groups, "pseudo_labels")

    def _source_pool(self, ctx) -> list[dict]:
        """The ``source`` plugin's train rows as pool rows: ids prefixed, labels and teachers removed."""
        rows = self._source_plugin().data_sources("train", ctx) or []
        rows = [make_row(f"{self.id_prefix}{r['id']}", r["prompt"], r["response_a"], r["response_b"],
                         label=None, model_a=r.get("model_a"), model_b=r.get("model_b"),
                         source=f"pseudo_labels:{self.source}")
                for r in rows]
        return sample_rows(rows, self.max_rows, ctx.seed)

    def _labelled(self, ctx) -> list[dict]:
        labellers = self.labellers
        pool, every = None, []
        for name in labellers:
            out = (ctx.stage_outputs or {}).get(name) or {}
            preds = out.get("pool")
            if not preds or out.get("pool_rows") is None:
                raise ReplicatorError(
                    f"pseudo_labels: stage {name!r} wrote no pool predictions (stage "
                    f"{ctx.stage or '(main)'} needs them): add `outputs: [pool]` to stage {name!r}, "
                    "give it a pseudo_labels block with the pool file, and put it before this stage")
            pool = out["pool_rows"] if pool is None else pool
            every.append((name, preds))
        rows, low = [], 0
        for r in pool:
            rid = str(r["id"])
            probs = []
            for name, preds in every:
                if rid not in preds:
                    raise ReplicatorError(
                        f"pseudo_labels: stage {name!r} has no pool prediction for row {rid} "
                        f"(the labellers {', '.join(labellers)} must predict the same pool)")
                p = pseudo_label(preds[rid], False)
                if p is None:
                    raise ReplicatorError(f"pseudo_labels: stage {name!r}: prediction for row {rid} is not "
                                          f"three finite non-negative probabilities: {preds[rid]!r}")
                probs.append(p)
            mean = [sum(c) / len(probs) for c in zip(*probs, strict=True)]
            label = pseudo_label(mean, self.hard)
            if max(mean) < self.min_confidence:
                low += 1
                continue
            rows.append(make_row(rid, r["prompt"], r["response_a"], r["response_b"], label=label,
                                 model_a=r.get("model_a"), model_b=r.get("model_b"), source="pseudo_labels"))
        if low:
            log.info("pseudo_labels: dropped %d of %d pool row(s) whose largest predicted probability is "
                     "below min_confidence %s", low, len(pool), self.min_confidence)
        return drop_valid_groups(rows, ctx.held_out_groups, "pseudo_labels")

    @property
    def labellers(self) -> list[str]:
        """The stages whose pool predictions (averaged) label the rows."""
        return [] if self.from_stage is None else [self.from_stage] if isinstance(self.from_stage, str) \
            else list(self.from_stage)

    @hookimpl
    def data_sources(self, split, ctx):
        labeller = self.from_stage is None or ctx.stage in self.labellers
        if labeller:
            return self._pool(ctx) if split == "pool" else None
        return self._labelled(ctx) if split == "train" else None

    def full_size_rows(self, stage: str, recipe: str) -> dict | None:
        """The pseudo-label pool of the solution ``recipe`` reproduces: 2nd 240k [P2], 3rd ~500k generated
        pairs [P3], 9th ~45k chat-1m pairs [P9]; predicted by the labelling stage, trained on by the
        others (``replicate plan``; core/lib/full_size.py). None for other recipes: unknown."""
        if recipe not in POOL_ROWS:
            return None
        rows, tag = POOL_ROWS[recipe]
        labeller = self.from_stage is None or self.from_stage == stage  # as data_sources decides
        return {"pool" if labeller else "train": rows, "size": f"{rows:,} {tag}"}
