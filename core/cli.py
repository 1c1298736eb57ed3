"""The ``replicate`` command line. Heavy imports happen inside the commands that need them."""

from __future__ import annotations

import json
import logging
import sys
import time
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from replicator.core.config.catalogue import describe
from replicator.core.config.recipe import load_yaml, resolve
from replicator.core.config.sections import has_combination, section_lines
from replicator.core.config.toggles import SHARED, apply_toggle, recipe_toggle_info, recipe_toggles, status
from replicator.core.data.files import data_dir
from replicator.core.errors import ReplicatorError
from replicator.core.report import second_stage as ss
from replicator.core.report.build import build_report
from replicator.core.report.runs import default_out_dir, discover_runs
from replicator.core.run import blend as bl
from replicator.core.run.ablate import execute, parse_seeds, plan_ablation
from replicator.core.run.combination import plan_combination, run_plan
from replicator.core.run.export import export_run, push_run
from replicator.core.run.pipeline import run_recipe
from replicator.core.run.resources import format_plan, plan_resources
from replicator.core.run.submission import predict as predict_run
from replicator.core.util.distributed import is_main
from replicator.core.util.layout import run_folders
from replicator.core.util.logs import ROOT as LOGGER
from replicator.core.util.logs import setup
from replicator.core.util.path_checks import writable_folder

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Reproduce the top LMSYS Chatbot Arena solutions from YAML recipes.")

ToggleOpt = Annotated[list[str], typer.Option("--toggle", "-t",
                                              help="named toggle of the recipe (repeatable)")]
OverrideArg = Annotated[list[str], typer.Argument(help="overrides key.path=value", show_default=False)]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="debug messages and the hook trace")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="warnings and errors only, no progress bars")]

#: -v / -q given before the command (``replicate -q run ...``): they apply to every command
_GLOBAL = {"verbose": False, "quiet": False}


@app.callback()
def _options(ctx: typer.Context, verbose: VerboseOpt = False, quiet: QuietOpt = False):
    """Reproduce the top LMSYS Chatbot Arena solutions from YAML recipes."""
    # during the command the replicator logger's records go to its own handler (setup) only, never on to the
    # root logger: a handler that an imported library adds there (GPT-QModel's basicConfig) would print each
    # of them a second time. Put back when the command ends, for a caller in the same process (caplog).
    logger = logging.getLogger(LOGGER)
    ctx.call_on_close(partial(setattr, logger, "propagate", logger.propagate))
    logger.propagate = False
    _GLOBAL.update(verbose=verbose, quiet=quiet)
    logging_setup()


def logging_setup(verbose: bool = False, quiet: bool = False) -> bool:
    """Set up logging for a command from its -v/-q and the global ones; return whether progress
    bars show (not with -q). -v sets DEBUG and REPLICATOR_TRACE=1 (the hook trace)."""

    verbose, quiet = verbose or _GLOBAL["verbose"], quiet or _GLOBAL["quiet"]
    if verbose and quiet:
        _fail(ValueError("-v/--verbose and -q/--quiet exclude each other"))
    setup(1 if verbose else -1 if quiet else 0)
    return not quiet


def _fail(e: Exception) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(2)


def _fail_os(e: OSError) -> None:
    """A file that could not be read or written, named, without a traceback (it is logged at debug level)."""

    logging.getLogger(__name__).debug("traceback of the error", exc_info=e)
    where = e.filename if e.filename is not None else "a file"
    _fail(ReplicatorError(f"{where}: {e.strerror or e}" + (f" ({type(e).__name__})" if e.strerror else "")))


@app.command()
def show(recipe: Path, toggle: ToggleOpt = [], overrides: OverrideArg = None,  # noqa: B006
         verbose: VerboseOpt = False, quiet: QuietOpt = False):
    """Print the resolved recipe, every default written out, and its hash (no model is loaded)."""

    logging_setup(verbose, quiet)
    try:
        r = resolve(recipe, toggle, overrides or [])
    except ReplicatorError as e:
        _fail(e)
    except OSError as e:
        _fail_os(e)
    typer.echo(r.to_yaml(), nl=False)
    typer.echo(f"# config_hash: {r.config_hash}")
    typer.echo(f"# stages: {', '.join(s.name for s in r.stages)}")

    for line in section_lines(r):
        typer.echo(line)


@app.command()
def plan(recipe: Path, toggle: ToggleOpt = [], overrides: OverrideArg = None,  # noqa: B006
         as_json: Annotated[bool, typer.Option("--json", help="machine-readable, the same numbers")] = False,
         strict: Annotated[bool, typer.Option("--strict", help="exit 1 when a stage does not fit its launch "
                                                                "hardware")] = False,
         verbose: VerboseOpt = False, quiet: QuietOpt = False):
    """Plan every stage at full size without weights or data: parameters, trainable parameters, memory per
    GPU (training and inference, estimates), rows, tokens and steps per epoch, whether it fits the recipe's
    launch hardware, and the launch command."""

    logging_setup(verbose, quiet)
    try:
        p = plan_resources(recipe, toggle, overrides or [])
    except ReplicatorError as e:
        _fail(e)
    except OSError as e:
        _fail_os(e)
    typer.echo(json.dumps(p, indent=2) if as_json else format_plan(p))
    if strict and not p["fits"]:
        raise typer.Exit(1)


@app.command()
def plugins(as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False):
    """List every plugin with its hooks, the package that provides it and its documented parameters."""

    try:
        entries = describe()
    except ReplicatorError as e:
        _fail(e)
    if as_json:
        typer.echo(json.dumps(entries, indent=2, default=str))
        return
    for e in entries:
        first = e["doc"].splitlines()[0] if e["doc"] else ""
        dist = e["distribution"] or "(unknown distribution)"
        ver = e["version"] or "(not installed)"
        typer.echo(f"{e['name']}  [{', '.join(e['hooks'])}]  {dist} {ver}")
        typer.echo(f"    {first}")
        for name, tp, default, doc in e["params"]:
            typer.echo(f"    - {name}: {tp} = {default!r}  {doc}")


@app.command()
def run(recipe: Path, toggle: ToggleOpt = [], overrides: OverrideArg = None,  # noqa: B006
        force: Annotated[bool, typer.Option("--force", help="recompute even if this run exists")] = False,
        member: Annotated[list[str], typer.Option(
            "--member", help="with folds:/ensemble: run only this member (a member name or fold<i>; "
                             "repeatable), not the combination")] = [],  # noqa: B006
        track: Annotated[str | None, typer.Option(
            "--track", help="live tracking: tensorboard (the default where installed), wandb, mlflow or "
                            "none; the recipe's tracking: setting, not part of the run id",
            show_default=False)] = None,
        verbose: VerboseOpt = False, quiet: QuietOpt = False):
    """Run a recipe (all its stages) and write reports/<recipe>/<run_id>/; with folds: or ensemble:, every
    member run, then the combination (reports/<recipe>/folds-<hash>/, ensemble-<hash>/)."""

    progress = logging_setup(verbose, quiet)
    overrides = [*(overrides or []), *([f"tracking={track}"] if track else [])]  # core/util/tracking.py
    t0 = time.monotonic()
    try:
        ddir = data_dir()
        r = resolve(recipe, toggle, overrides or [], data_dir=ddir)

        if has_combination(r):
            return _run_combination(recipe, toggle, overrides or [], ddir, force, progress, member)
        if member:
            raise ReplicatorError(f"--member: {recipe} has no folds: or ensemble: section")

        run_dir, metrics, reused = run_recipe(r, ddir, force=force, progress=progress)
    except ReplicatorError as e:
        _fail(e)
    except OSError as e:
        _fail_os(e)
    except KeyboardInterrupt:
        if is_main():
            typer.echo("interrupted: rerun the same command to resume", err=True)
        raise typer.Exit(130) from None

    if not is_main():  # under a launcher the main process reports
        return
    typer.echo("\n".join(summary_lines(run_dir, run_folders(r.name, run_dir.name)[1], metrics, reused,
                                        time.monotonic() - t0)))


#: the reference rows of the single-run summary: (metrics.json key, label), each where metrics.json has it
SUMMARY_ROWS = (("tta_log_loss", "with TTA"), ("log_loss", "no TTA"),
                ("baseline_prior_log_loss", "prior baseline"),
                ("baseline_length_log_loss", "length baseline"),
                ("baseline_style_log_loss", "style baseline"))


def _duration(seconds: float) -> str:
    h, rest = divmod(round(seconds), 3600)
    if h:
        return f"{h} h {rest // 60} min"
    return f"{rest // 60} min {rest % 60} s" if rest >= 60 else f"{rest} s"


def summary_lines(run_dir: Path, artifacts: Path, metrics: dict, reused: bool, seconds: float) -> list[str]:
    """What ``replicate run`` prints for one run: ``finished: RUN_FOLDER`` (or ``reused:``; scripts read
    the folder there) with the time, the final log loss and the references on the same validation rows
    (with and without TTA, the baselines) with Δ = final − reference (below 0: the run is better), the
    artifacts folder and the next commands."""
    took = sum(s.get("seconds") or 0 for s in (metrics.get("stages") or {}).values() if isinstance(s, dict))
    when = (f"computed before in {_duration(took)}" if took else "computed before") if reused \
        else f"in {_duration(seconds)}"
    lines = [f"{'reused' if reused else 'finished'}: {run_dir} ({when})"]
    final, rows = metrics.get("final_log_loss"), metrics.get("n_valid_rows")
    if isinstance(final, (int, float)):
        on = f" on {rows} validation rows" if isinstance(rows, int) else ""
        lines += [f"  {'log loss' + on:<34}{'Δ final − it':>14}", f"    {'final':<16}{final:>14.4f}"]
        for key, label in SUMMARY_ROWS:
            value = metrics.get(key)
            if isinstance(value, (int, float)):
                lines.append(f"    {label:<16}{value:>14.4f}{final - value:>+14.4f}")
        lines.append("  (Δ below 0: the final predictions beat that reference)")
    lines += [f"artifacts: {artifacts}", "next:", f"  replicate report {run_dir}",
              f"  replicate predict {run_dir} test.csv -o submission.csv"]
    return lines


def _run_combination(recipe: Path, toggles: list[str], overrides: list[str], ddir: Path, force: bool,
                     progress: bool, only: list[str]) -> None:
    """``run`` on a recipe with folds:/ensemble:: the plan, every member run, then the combination."""

    p = plan_combination(recipe, toggles, overrides, data_dir=ddir)
    result = run_plan(p, ddir, force=force, progress=progress, only=only)
    if not is_main():
        return
    for label, run_dir, metrics, reused in result["members"]:
        score = metrics.get("final_log_loss")
        typer.echo(f"member {label}: {'reused' if reused else 'finished'} {run_dir}"
                   + (f" (final log loss {score:.4f})" if isinstance(score, float) else ""))
    for kind, folder, metrics, reused in result["combinations"]:
        typer.echo(f"{kind}: {'reused' if reused else 'finished'} {folder} (final log loss "
                   f"{metrics['final_log_loss']:.4f} on {metrics['n_valid_rows']} rows)")
    if result["combinations"]:
        folder = result["combinations"][-1][1]
        summary = folder / ("ensemble.md" if (folder / "ensemble.md").is_file() else "folds.md")
        typer.echo(summary.read_text(encoding="utf-8"))
        members = " ".join(dict.fromkeys(str(d) for _, d, _, _ in result["members"]))
        typer.echo(f"compare: replicate report {folder} {members}")
        typer.echo(f"predict: replicate predict {folder} test.csv -o submission.csv")


@app.command()
def predict(run: str, test_csv: Path,
            out: Annotated[Path, typer.Option(
                "--out", "-o", help="submission CSV to write")] = Path("submission.csv"),
            verbose: VerboseOpt = False, quiet: QuietOpt = False):
    """Predict a Kaggle-format test CSV with a finished run; write a valid submission."""

    progress = logging_setup(verbose, quiet)
    try:
        info = predict_run(run, test_csv, out, progress=progress)
    except ReplicatorError as e:
        _fail(e)
    except OSError as e:
        _fail_os(e)
    typer.echo(f"wrote {info['out']} ({info['rows']} rows) with {info['run']}")


@app.command()
def export(run: str, folder: Path, verbose: VerboseOpt = False, quiet: QuietOpt = False):
    """Write a finished run's model as a hub-ready folder: peft adapters + head (or the whole model of a full
    fine-tune), tokenizer, model card (core/run/export.py)."""

    logging_setup(verbose, quiet)
    try:
        info = export_run(run, folder)
    except ReplicatorError as e:
        _fail(e)
    except OSError as e:
        _fail_os(e)
    typer.echo(f"exported {info['run_id']} ({info['kind']}) to {info['folder']}: {', '.join(info['files'])}")


@app.command()
def push(run: str, repo: str,
         private: Annotated[bool, typer.Option("--private", help="create the repo private")] = False,
         token: Annotated[str | None, typer.Option(
             "--token", help="hub token (default: HF_TOKEN or the saved login)", show_default=False)] = None,
         endpoint: Annotated[str | None, typer.Option(
             "--endpoint", help="hub URL (default: HF_ENDPOINT, else huggingface.co)",
             show_default=False)] = None,
         verbose: VerboseOpt = False, quiet: QuietOpt = False):
    """Export a finished run (as `replicate export`) and upload it to the Hugging Face hub repo REPO."""

    logging_setup(verbose, quiet)
    try:
        info = push_run(run, repo, private=private, token=token, endpoint=endpoint)
    except ReplicatorError as e:
        _fail(e)
    except OSError as e:
        _fail_os(e)
    typer.echo(f"pushed {info['run_id']} to {info['repo']} ({info['commit']})")


@app.command()
def report(paths: Annotated[list[Path], typer.Argument(help="run folders, or folders holding run folders "
                                                             "(e.g. reports/smoke/)", show_default=False)],
           out: Annotated[Path | None, typer.Option(
               "--out", "-o", help="folder to write report.md/.html/.json into (default: report-<hash of the "
                                   "run ids> beside the base run, i.e. reports/<recipe>/report-<hash8>)",
               show_default=False)] = None,
           base: Annotated[Path | None, typer.Option(
               "--base", help="the run folder the others are compared with (default: the run without "
                              "toggles: the variant with the fewest toggles, then the most seeds)",
               show_default=False)] = None,
           strict: Annotated[bool, typer.Option(
               "--strict",
               help="refuse runs whose data, split or environment differ from the base")] = False):
    """Compare runs: log loss, Δ vs the base with 95% paired bootstrap intervals, plots (Markdown + HTML)."""

    try:
        dirs = discover_runs(paths)
        if base is not None and not (base / "fingerprint.json").is_file():
            raise ReplicatorError(f"--base {base}: not a run folder (no fingerprint.json)")
        out_dir = out if out is not None else default_out_dir(dirs, base)
        writable_folder(out_dir, "report folder" + (" (-o)" if out is not None else ""))  # before any work
        result = build_report(dirs, out_dir, base=base, strict=strict)
    except ReplicatorError as e:
        _fail(e)
    except OSError as e:
        _fail_os(e)
    typer.echo(result["table_md"])
    for path in result["files"].values():
        typer.echo(f"wrote {path}")


@app.command("second-stage")
def second_stage_cmd(runs: Annotated[list[Path], typer.Argument(
                         help="cross-fitted runs of the LM alone, one per split seed (e.g. `replicate run "
                              "recipes/smoke.yaml -t offset_off seed=0`)", show_default=False)],
                     base: Annotated[list[Path], typer.Option(
                         "--base", help="runs to compare with, matched by split seed (repeatable)")] = [],  # noqa: B006
                     data: Annotated[Path | None, typer.Option(
                         "--data", help="the competition CSV the runs scored (default: "
                                        "$REPLICATOR_DATA_DIR/lmsys-chatbot-arena/train.csv)",
                         show_default=False)] = None,
                     out: Annotated[Path | None, typer.Option(
                         "--out", "-o", help="folder for second_stage.md and second_stage.json",
                         show_default=False)] = None):
    """The write-up author's second stage, measured: gradient-boosted trees on a cross-fitted run's
    out-of-fold probabilities plus length and style features, cross-fitted again; Δ against the style
    regression, the LM alone and --base, with 95 % paired intervals (core/report/second_stage.py)."""
    try:
        csv = data if data is not None else data_dir() / "lmsys-chatbot-arena" / "train.csv"
        if out is not None:
            writable_folder(out, "second-stage folder (-o)")
        result = ss.second_stage(runs, base, csv, progress=typer.echo)
    except ReplicatorError as e:
        _fail(e)
    except OSError as e:
        _fail_os(e)
    typer.echo(ss.markdown(result))
    for path in ss.write(result, out) if out is not None else []:
        typer.echo(f"wrote {path}")


@app.command()
def blend(runs: Annotated[list[Path], typer.Argument(
              help="run folders (or folders holding them) of two or more variants, one run per variant and "
                   "split seed, that scored the same rows (e.g. the cpu recipe's and the smoke recipe's "
                   "cross-fitted runs)", show_default=False)],
          out: Annotated[Path | None, typer.Option(
              "--out", "-o", help="folder for blend.md and blend.json", show_default=False)] = None):
    """An ensemble of finished runs, measured: per split seed, the members' predictions blended with weights
    fitted out of fold over prompt groups; Δ against each member and the style regression with 95 % paired
    intervals, per seed and pooled (core/run/blend.py)."""
    try:
        if out is not None:
            writable_folder(out, "blend folder (-o)")
        result = bl.blend_runs(runs, progress=typer.echo)
    except ReplicatorError as e:
        _fail(e)
    except OSError as e:
        _fail_os(e)
    typer.echo(bl.markdown(result))
    for path in bl.write(result, out) if out is not None else []:
        typer.echo(f"wrote {path}")


@app.command()
def ablate(recipe: Annotated[Path, typer.Argument(
               help="recipe file (default: recipes/smoke.yaml, relative to the current folder)",
               show_default=False)] = Path("recipes/smoke.yaml"),
           toggle: Annotated[list[str], typer.Option(
               "--toggle", "-t",
               help="a toggle to measure: one variant per toggle (repeatable); shared toggles (swap, tta, "
                    "focal, ...) flip their technique, see recipes/README.md")] = [],  # noqa: B006
           seeds: Annotated[str | None, typer.Option(
               "--seeds", help="comma-separated seeds, e.g. 0,1,2 (default: the recipe's seed)",
               show_default=False)] = None,
           base_toggle: Annotated[list[str], typer.Option(
               "--base-toggle", "-b", help="toggle applied to the base and every variant, e.g. tiny "
                                           "(repeatable)")] = [],  # noqa: B006
           set_: Annotated[list[str], typer.Option(
               "--set", help="override key.path=value for every run (repeatable)")] = [],  # noqa: B006
           vary: Annotated[list[str], typer.Option(
               "--vary", help="ad-hoc variants: key.path=value1,value2 runs one variant per value, each "
                              "named by its override in the report, e.g. --vary train.lr=1e-4,2e-4 "
                              "(repeatable)")] = [],  # noqa: B006
           force: Annotated[bool, typer.Option("--force", help="recompute runs that exist")] = False,
           out: Annotated[Path | None, typer.Option(
               "--out", "-o", help="report folder (default: reports/<recipe>/ablation-<toggles joined by +>-"
                                   "s<seeds joined by ->, + -on-<base toggles> when -b is given)",
               show_default=False)] = None,
           dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan only")] = False,
           list_: Annotated[bool, typer.Option(
               "--list",
               help="list the recipe's toggles and which way each shared toggle goes on it")] = False,
           verbose: VerboseOpt = False, quiet: QuietOpt = False):
    """Ablate: for each seed a base run and one run per toggle (same split), then the report with Δ log
    loss and paired bootstrap intervals. Prints the plan first; finished runs are reused."""

    progress = logging_setup(verbose, quiet)
    try:
        if list_:
            _list_toggles(recipe, base_toggle)
            return
        p = plan_ablation(recipe, toggle, parse_seeds(seeds), base_toggle, set_, out_dir=out, force=force,
                          vary=vary)
        writable_folder(p.out_dir, "report folder" + (" (-o)" if out is not None else ""))  # before any run
        typer.echo(p.text())
        if dry_run:
            return
        result = execute(p, progress=progress)
    except ReplicatorError as e:
        _fail(e)
    except OSError as e:
        _fail_os(e)
    typer.echo(result["report"]["table_md"])
    for path in [*result["report"]["files"].values(), p.out_dir / "ablation.json"]:
        typer.echo(f"wrote {path}")


def _list_toggles(recipe: Path, base_toggles: list[str]) -> None:

    raw = load_yaml(recipe)
    named = recipe_toggles(raw, str(recipe))
    cfg = {k: v for k, v in raw.items() if k != "toggles"}
    for t in base_toggles:
        cfg, _ = apply_toggle(cfg, t, named, str(recipe))
    typer.echo(f"recipe toggles of {recipe}: {', '.join(named) or '(none)'}")
    claim = " " * 24 + "write-ups claim: {}"  # under the description, where the toggle has a claim
    for name, info in recipe_toggle_info(raw, str(recipe)).items():
        typer.echo(f"  {name:<16} {info.direction or '-':<4} {info.about}")
        if info.claimed:
            typer.echo(claim.format(info.claimed))
    typer.echo("shared toggles" + (f" (after {' '.join(base_toggles)})" if base_toggles else "") + ":")
    for name, direction, what in status(cfg, str(recipe)):
        typer.echo(f"  {name:<16} {direction:<4} {what}")
        if SHARED[name].claimed:
            typer.echo(claim.format(SHARED[name].claimed))


def main():  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # python -m replicator.core.cli (accelerate launch -m replicator.core.cli ...)
    main()
