"""``replicate predict``: a finished run's final model on a Kaggle-format test CSV -> a submission
(``id, winner_model_a, winner_model_b, winner_tie``; probabilities in [0, 1] summing to 1)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from replicator.core.data.competition import read_competition_csv
from replicator.core.errors import ReplicatorError
from replicator.core.run.combination import check_combination, is_combination, predict_combination
from replicator.core.run.finished_runs import find_run, run_parts, run_probs
from replicator.core.util.atomic import atomic_write_text
from replicator.core.util.distributed import is_main
from replicator.core.util.layout import FINGERPRINT, artifacts_root, reports_root
from replicator.core.util.path_checks import output_file, readable_file

log = logging.getLogger(__name__)


def submission_frame(ids: list[str], probs: np.ndarray):
    """The submission table: probabilities clipped to [0, 1] and normalised per row."""
    import pandas as pd

    final = np.clip(probs, 0.0, 1.0)
    final = final / final.sum(axis=1, keepdims=True)
    return pd.DataFrame({"id": ids, "winner_model_a": final[:, 0], "winner_model_b": final[:, 1],
                         "winner_tie": final[:, 2]})


def _inputs(run: str, test_csv: Path, out: Path) -> tuple[Path, dict | None, object, Path | None]:
    """Every path ``predict`` reads or writes checked before a model loads: (run folder, its
    fingerprint, its final stage, the stage's artifacts folder); for a fold or ensemble combination
    (:mod:`replicator.core.run.combination`) the last three are None and every member is checked."""

    output_file(out, "submission file (--out)")
    readable_file(test_csv, "test file")
    run_dir = find_run(run)
    not_an_input(out, test_csv, run_dir)
    if is_combination(run_dir):
        check_combination(run_dir)
        return run_dir, None, None, None
    return (run_dir, *run_parts(run_dir))


def run_folders_of(run_dir: Path) -> list[Path]:
    """The folders whose files a finished run (or combination) owns: its reports folder, its artifacts
    folder and, for a combination, those of its member runs (by the run ids its ``fingerprint.json``
    names; a damaged file names fewer, never an error here)."""
    folders = [Path(run_dir)]
    try:
        info = json.loads((Path(run_dir) / FINGERPRINT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return folders
    if not isinstance(info, dict):
        return folders
    recipe, run_id = info.get("recipe"), info.get("run_id")
    if isinstance(recipe, str) and isinstance(run_id, str) and recipe and run_id:
        folders.append(artifacts_root() / recipe / run_id)
    members = info.get("members") if isinstance(info.get("members"), dict) else {}
    for member in members.values():
        if isinstance(member, str) and member and "/" not in member:
            folders += [*reports_root().glob(f"*/{member}"), *artifacts_root().glob(f"*/{member}")]
    return folders


def not_an_input(out: Path, test_csv: Path, run_dir: Path) -> None:
    """``out`` is neither the test file (same file by any path or link) nor a file inside the run's folders
    (:func:`run_folders_of`): a ReplicatorError naming both, before anything is read or written."""
    target = Path(out).resolve()
    if target == Path(test_csv).resolve() or (Path(out).exists() and os.path.samefile(out, test_csv)):
        raise ReplicatorError(f"submission file (--out) {out}: is the test file {test_csv}; writing it would "
                              "replace the test rows: give another file name")
    for folder in run_folders_of(run_dir):
        if target.is_relative_to(folder.resolve()):
            raise ReplicatorError(f"submission file (--out) {out}: is inside the run's folder {folder}; "
                                  "writing it would change the run: give a file outside it")


def predict(run: str, test_csv: Path, out: Path, progress: bool = True) -> dict:
    """Write a Kaggle/mle-bench submission for ``test_csv`` with the final model of ``run`` (or with
    the fold or ensemble combination ``run`` names:
    :func:`replicator.core.run.combination.predict_combination`).

    Every input and output is checked first (:func:`_inputs`), the test rows are read and validated,
    then the model loads. Postprocessing (calibration) is fitted on all the run's validation predictions."""

    run_dir, _, stage, artifacts = _inputs(run, Path(test_csv), Path(out))
    rows = read_competition_csv(test_csv, require_labels=False)
    if stage is None:
        return _write(out, rows, predict_combination(run_dir, rows, progress), run_dir)
    return _write(out, rows, run_probs(run_dir, stage, artifacts, rows, "final", progress), run_dir)


def _write(out, rows: list[dict], final: np.ndarray, run_dir: Path) -> dict:
    out = Path(out)
    if is_main():
        atomic_write_text(out, submission_frame([r["id"] for r in rows], final)
                          .to_csv(index=False, float_format="%.10f"))
    log.info("wrote %s (%d rows) with %s", out, len(rows), run_dir)
    return {"rows": len(rows), "out": str(out), "run": str(run_dir)}
