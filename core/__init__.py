"""arena-replicator core, in layers: a package imports only from the packages below it (pyproject.toml's
import-linter contract, checked in CI).

    cli                 the ``replicate`` command line
    run                 recipes run: pipeline, folds and ensembles, ablate, plan, predict
    report              comparisons of runs (Markdown, HTML)
    stages              the stage kinds (baseline, frozen features) and the cached steps of fine-tuning
    train | predict     the training loop | prediction, postprocessing and validation scoring
    model               loading, quantisation, sharding, models without weights
    tokens              token cache and batches
    config              recipes, the plugin catalogue, toggles, the folds/ensemble sections
    lib                 the plugins' helper library (part of the plugin kit)
    data                reading, validating and splitting the data
    hookspecs           the seven seams (plugin kit)
    scoring             metrics, paired statistics, per-row prediction files
    util                file layout, atomic writes, locks, processes, logging
    rows | params       the row schema | typed parameter blocks (plugin kit)
    errors              errors that name the file, key or row (plugin kit)

Plugins (``replicator.plugins``) import only the plugin kit (errors, params, rows, hookspecs, lib) and
data, scoring, util. Heavy libraries (torch, transformers, ...) are imported inside the functions that
use them (ruff TID253), so that ``--help``, ``show``, ``plan`` and every recipe check start without them.
"""
