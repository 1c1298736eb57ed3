"""The ``folds:`` and ``ensemble:`` sections of a recipe: their schemas and the checks made when a
recipe resolves. Running them is :mod:`replicator.core.run.combination`'s job."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from replicator.core.config.catalogue import catalogue
from replicator.core.errors import RecipeError
from replicator.core.params import ParamError, build, check_params, param

if TYPE_CHECKING:
    from replicator.core.config.recipe import Resolved

#: the most folds a ``folds:`` section may ask for (each fold is a run of its own, planned up front)
MAX_FOLDS = 100
#: an ensemble member's name
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


@dataclasses.dataclass(frozen=True)
class FoldsConfig:
    """The ``folds:`` section of a recipe."""

    k: int = param(5, f"number of folds (sets plugins.<plugin>.folds); at most {MAX_FOLDS}: each fold is "
                      "a whole run, resolved before anything runs", ge=2)
    plugin: str = param("data", "alias of the data plugin block whose folds/fold parameters choose the "
                                "validation rows (kaggle_csv: a StratifiedGroupKFold by prompt)")
    run: list[int] | None = param(None, "the folds to run (null = all k); each is an ordinary, reusable run")
    average: Literal["adapters", "probs"] = param(
        "probs", "how `replicate predict` combines the fold models: adapters = one model with the mean "
                 "of the folds' trainable weights (LoRA + head; 1st place [R1]); probs = the mean of the "
                 "fold models' predictions")

    def __post_init__(self):
        check_params(self)
        if self.k > MAX_FOLDS:  # before anything counts the folds: k = 1000000 must fail at once
            raise ParamError("k", f"k must be at most {MAX_FOLDS} (each fold is a whole run), got {self.k}")
        folds = self.folds
        bad = [i for i in folds if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < self.k]
        if bad:
            raise ParamError("run", f"run: folds must be integers in [0, {self.k}) (k = {self.k}), got {bad}")
        if len(set(folds)) != len(folds):
            raise ParamError("run", f"run: a fold is listed twice: {self.run}")
        if not folds:
            raise ParamError("run", "run: at least one fold")

    @property
    def folds(self) -> list[int]:
        return list(range(self.k)) if self.run is None else list(self.run)


@dataclasses.dataclass(frozen=True)
class GateConfig:
    """Rows a member predicts: estimated tokens <= ``tokens_le`` or >= ``tokens_ge`` (either may be null)."""

    tokens_le: int | None = param(None, "the member predicts rows of at most this many tokens", ge=0)
    tokens_ge: int | None = param(None, "the member predicts rows of at least this many tokens", ge=0)
    chars_per_token: float = param(4.0, "token count proxy: characters of prompt + responses / this", gt=0)

    def __post_init__(self):
        check_params(self)
        if self.tokens_le is None and self.tokens_ge is None:
            raise ParamError("tokens_le", "a gate needs tokens_le and/or tokens_ge")


@dataclasses.dataclass(frozen=True)
class MemberConfig:
    """One member of ``ensemble.members``."""

    recipe: str | None = param(None, "another recipe file (relative to this recipe's folder, else to the "
                                     "current folder); null = this recipe")
    toggles: list[str] = param([], "toggles of the member, applied before the command line's")
    overrides: list[str] = param([], "key.path=value overrides of the member, applied after the command "
                                     "line's toggles and before its overrides")
    weight: float = param(1.0, "blend weight (weights: fixed); normalised over the members", gt=0)
    input: Literal["final", "identity", "swapped", "both"] = param(
        "final", "which predictions the blend reads: final (its submission), identity, swapped (A/B-swapped "
                 "rows, columns swapped back), both (mean of identity and swapped)")
    gate: GateConfig | None = param(None, "use the member only on rows whose estimated tokens pass the gate")


@dataclasses.dataclass(frozen=True)
class EnsembleConfig:
    """The ``ensemble:`` section of a recipe."""

    members: dict = param(dataclasses.MISSING,
                          "member name -> {recipe, toggles, overrides, weight, input, gate}")
    weights: Literal["fixed", "fit"] = param(
        "fixed", "fixed: the members' weights; fit: fitted on their common validation rows (scored out of "
                 "fold)")
    fit_folds: int = param(5, "weights: fit: folds over prompt groups for the honest (out-of-fold) score",
                           ge=2)


def build_ensemble(section: dict, file: str) -> tuple[EnsembleConfig, dict[str, MemberConfig]]:
    """The checked section and its members (RecipeError naming ``ensemble.<key>``)."""
    cfg = build(EnsembleConfig, section, file, "ensemble")
    if not isinstance(cfg.members, dict) or not cfg.members:
        raise RecipeError(file, "ensemble.members", "a mapping of at least one member name -> its settings")
    members = {}
    for name, spec in cfg.members.items():
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise RecipeError(file, f"ensemble.members.{name}",
                              "a member name is letters, digits and underscores, starting with a letter")
        key = f"ensemble.members.{name}"
        members[name] = build(MemberConfig, spec if spec is not None else {}, file, key)
    if all(m.gate is not None for m in members.values()):
        raise RecipeError(file, "ensemble.members",
                          "every member is gated: at least one member must predict every row")
    return cfg, members


def check_sections(cfg: dict, stages, file: str) -> None:
    """Resolve-time checks of ``folds:`` and ``ensemble:`` (RecipeError naming the key): the schemas,
    the folds' plugin block (in the final stage, with ``folds`` and ``fold`` parameters), and every
    member's recipe file."""
    if cfg.get("folds") is not None:
        folds = folds_config(cfg["folds"], file)
        check_fold_plugin(folds, stages[-1].plugins, file)
        if stages[-1].train.crossfit:
            raise RecipeError(file, "folds", "not with train.crossfit: a cross-fitted stage scores every row "
                              "out of fold already, so fold runs would score the same rows")
    if cfg.get("ensemble") is not None:
        _, members = build_ensemble(cfg["ensemble"], file)
        for name, m in members.items():
            if m.recipe is not None:
                member_file(m.recipe, file, f"ensemble.members.{name}.recipe")


def folds_config(section, file: str) -> FoldsConfig:
    return build(FoldsConfig, section, file, "folds")


def check_fold_plugin(folds: FoldsConfig, plugins: dict, file: str) -> None:
    block = plugins.get(folds.plugin)
    if not isinstance(block, dict):
        raise RecipeError(file, "folds.plugin", f"no plugin block {folds.plugin!r} in the final stage; "
                          f"blocks: {', '.join(plugins) or '(none)'}")
    plugin_catalogue = catalogue()
    cls = plugin_catalogue[block["use"]] if block.get("use") in plugin_catalogue else None
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    if not {"folds", "fold"} <= fields:
        raise RecipeError(file, "folds.plugin", f"plugin block {folds.plugin!r} (use: {block.get('use')}) "
                          "has no folds/fold parameters to choose the validation rows (kaggle_csv has)")


def member_file(recipe: str, file: str, key: str) -> Path:
    """A member's recipe file: relative to the folder of the recipe naming it, else to the current folder."""
    tried = [Path(file).parent / recipe, Path(recipe)]
    for p in tried:
        if p.is_file():
            return p
    raise RecipeError(file, key, f"recipe file not found (tried {', '.join(map(str, dict.fromkeys(tried)))})")


def has_combination(resolved: Resolved) -> bool:
    return resolved.config.get("folds") is not None or resolved.config.get("ensemble") is not None


def section_lines(resolved: Resolved) -> list[str]:
    """What ``replicate show`` prints about the sections (no run ids: nothing is fingerprinted)."""
    lines = []
    if resolved.config.get("folds") is not None:
        f = folds_config(resolved.config["folds"], resolved.file)
        lines.append(f"# folds: k={f.k}, runs {', '.join(map(str, f.folds))} with plugins.{f.plugin}.fold "
                     f"set, average {f.average}")
    if resolved.config.get("ensemble") is not None:
        e, members = build_ensemble(resolved.config["ensemble"], resolved.file)
        lines.append(f"# ensemble: weights {e.weights}, members:")
        for name, m in members.items():
            gate = f", gate {dataclasses.asdict(m.gate)}" if m.gate else ""
            lines.append(f"#   {name}: {m.recipe or resolved.file} toggles {m.toggles} overrides "
                         f"{m.overrides}, weight {m.weight:g}, input {m.input}{gate}")
    return lines
