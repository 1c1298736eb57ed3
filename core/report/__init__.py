"""Compare runs: ``replicate report``.

Runs are grouped into *variants*: runs whose resolved config is the same except for the seed are
seeds of one variant (or the ``variant`` key of ``fingerprint.json`` names it). One variant is the
base: the one given, else the run without toggles (the fewest toggles, then the most seeds; never the
first folder in alphabetical order). Seeds are pooled only where every variant has them. For each
variant the report gives the log loss (mean over seeds, ± their standard deviation), the change against
the base with a 95% paired bootstrap interval over prompt groups and seeds (rows paired by (seed, id):
only rows both runs predicted), the same on each seed, the gain from the technique its toggle switches
(log loss without it − with it: one sign for on- and off-toggles), what its toggle measures and the config
keys it changed, accuracy, top-label calibration error, wall time and training tokens ("—" for a run that
trains no LM), a warning when its predictions are degenerate (one class the most likely for over 90 % of
the rows, or a tie never the most likely); and reference rows on the same validation rows, each with
the paired interval of base − reference: uniform (ln 3), the class prior, and the two fitted
baselines every run computes (core/stages/baseline.py), the length regression and the length-and-style
regression (from the runs' ``baseline_length`` / ``baseline_style`` views; a run made before a view
existed leaves its row to the other runs, or out, with a note). It says in words which differences the
intervals resolve.

Runs whose data hash, validation rows or environment (device, torch, transformers, peft) differ
from the base are flagged, except a difference their toggle declares it makes on purpose (``changes:``,
e.g. a toggle that adds data): that one is listed as expected; ``strict`` refuses the flagged ones.

Writes ``report.md``, one self-contained ``report.html`` (CSS inline, figures as SVG data URIs) and
``report.json`` (the numbers). The same inputs give byte-identical files.

Modules (each imports only modules listed before it):

* :mod:`~replicator.core.report.runs` -- loading runs, grouping them into variants.
* :mod:`~replicator.core.report.compare` -- the numbers: pairs, bootstrap intervals, verdicts, references.
* :mod:`~replicator.core.report.tables` -- the numbers as table cells and verdict sentences.
* :mod:`~replicator.core.report.markdown` -- ``report.md``.
* :mod:`~replicator.core.report.plots` -- the matplotlib drawings (SVG data URIs).
* :mod:`~replicator.core.report.figures` -- the report's figures: what each shows, its caption.
* :mod:`~replicator.core.report.html` -- ``report.html``, from the jinja2 template
  ``templates/report.html.j2``.
* :mod:`~replicator.core.report.build` -- :func:`~replicator.core.report.build.build_report`: all of it,
  written to files.
"""
