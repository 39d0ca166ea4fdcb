"""`edgebvit study`: train a named ladder under one budget, export every run, tabulate and plot."""
from __future__ import annotations

from pathlib import Path

import click

from edgebvit.errors import EdgebvitError


def _seeds(text: str):
    try:
        seeds = [int(s) for s in text.replace(",", " ").split()]
    except ValueError:
        raise EdgebvitError(f"--seeds takes integers separated by commas (e.g. 0,1,2), got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise EdgebvitError(f"--seeds needs at least one seed and no repeats, got {text!r}")
    return seeds


def _list_ladders() -> None:
    from edgebvit.study.ladders import LADDERS

    for lad in LADDERS.values():
        click.echo(f"{lad.name}: {lad.description}")
        for r in lad.rungs:
            extra = " ".join([*(f"--set {s}" for s in r.sets), *r.train])
            paper = f"  [paper {r.paper}]" if r.paper is not None else ""
            distil = {True: "  [distils]", False: "  [never distils]", None: ""}[r.distill]
            click.echo(f"  {r.key:<16} {r.model:<34} {extra}{paper}{distil}")


@click.command("study")
@click.argument("ladder", required=False)
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--list", "list_", is_flag=True, help="List the ladders and their rungs, then exit.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Study folder (default runs/study-LADDER); rerun the same command to resume it.")
@click.option("--rungs", default=None, help="Comma-separated rung keys to run (default: all, in ladder order).")
@click.option("--data", default="fashion_mnist", show_default=True,
              help="As for `edgebvit train`: a built-in name, an .npz or an image folder.")
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False), default=None)
@click.option("--max-train-samples", type=click.IntRange(min=1), default=None)
@click.option("--epochs", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Global batch for every rung (default: train's auto rule, 32 when 128 would give fewer "
                   "than 500 optimizer steps, else 128); a rung's own --batch-size wins.")
@click.option("--lr", type=float, default=None, help="Peak learning rate for every rung (default: train's).")
@click.option("--seeds", default="0", show_default=True, help="Comma-separated seeds; each rung runs once per seed.")
@click.option("--eval-images", type=click.IntRange(min=1), default=10000, show_default=True,
              help="Held-out test images each run saves and its flatbuffer is evaluated on (all when fewer).")
@click.option("--teacher", type=click.Path(exists=True, file_okay=False), default=None,
              help="A finished float run directory to distil from (rungs that allow it).")
@click.option("--teacher-model", default=None,
              help="Or a registered float model trained once into STUDY/teacher (e.g. cnn_small_32).")
@click.option("--teacher-epochs", type=click.IntRange(min=1), default=None, help="Teacher epochs (default --epochs).")
@click.option("--distill-mode", type=click.Choice(["hard", "soft"]), default="hard", show_default=True)
@click.option("--distill-weight", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True)
@click.option("--table-only", is_flag=True,
              help="Write table.md/csv and plot.png from the runs already finished in --out (whatever seeds "
                   "each rung has), training nothing; safe while the study runs.")
def command(ladder, overrides, list_, out, rungs, data, data_dir, max_train_samples, epochs, batch_size, lr, seeds,
            eval_images, teacher, teacher_model, teacher_epochs, distill_mode, distill_weight, table_only) -> None:
    """Train every rung of LADDER under one budget, export each run and evaluate its flatbuffer.

    Each rung and seed is a normal run directory, STUDY/<rung>/seed<S>, made by `edgebvit train`
    and `edgebvit export` in subprocesses. An interrupted study resumes where it stopped when the
    same command is run again (finished runs and exports are kept; more --seeds extend it). Writes
    STUDY/table.md and table.csv (parameters, MACs, flatbuffer size, Keras and flatbuffer test
    accuracy as mean +- std over seeds, the paper's ImageNet number beside) and STUDY/plot.png.
    KEY=VALUE arguments go to every run's `edgebvit train`.

    \b
    Examples:
      edgebvit study --list
      edgebvit study binaryvit --max-train-samples 12000 --epochs 3 --seeds 0,1,2
      edgebvit study recipe --max-train-samples 4000 --epochs 3 --teacher-model cnn_small_32
      edgebvit study bhvit --data cifar10 --seeds 0,1,2
    """
    if list_:
        _list_ladders()
        return
    if ladder is None:
        raise EdgebvitError("name a ladder (edgebvit study --list shows them), e.g. `edgebvit study binaryvit`")
    if teacher and teacher_model:
        raise EdgebvitError("--teacher and --teacher-model both name a teacher; pass one")
    from edgebvit.training.config import parse_overrides

    parse_overrides(overrides)  # the train command's own KEY=VALUE check, before any run starts
    from edgebvit.study.ladders import get_ladder
    from edgebvit.study.runner import Study, StudySettings

    keys = tuple(k.strip() for k in rungs.split(",") if k.strip()) if rungs else ()
    lad = get_ladder(ladder, keys)
    args = ["--data", data]
    if data_dir:
        args += ["--data-dir", str(Path(data_dir).resolve())]
    if max_train_samples:
        args += ["--max-train-samples", str(max_train_samples)]
    settings = StudySettings(
        ladder=lad.name, rungs=[r.key for r in lad.rungs], data=args, epochs=epochs, batch_size=batch_size, lr=lr,
        seeds=_seeds(seeds), eval_images=eval_images,
        teacher=str(Path(teacher).resolve()) if teacher else None, teacher_model=teacher_model,
        teacher_epochs=teacher_epochs or 0,
        distill=[f"distill.mode={distill_mode}", f"distill.weight={distill_weight}"], overrides=list(overrides))
    study = Study(out or Path("runs") / f"study-{lad.name}", lad, settings, echo=click.echo)
    if table_only:
        study.tabulate()
    else:
        study.run()
