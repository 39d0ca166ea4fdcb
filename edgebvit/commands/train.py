"""`edgebvit train`: train a registered model on a dataset into a run directory."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import click

from edgebvit.errors import EdgebvitError


def _parse_model_overrides(items) -> Dict[str, Any]:
    """`--set key=value` model overrides; values parse as YAML scalars/lists when they can."""
    from edgebvit.training.config import parse_overrides

    try:
        return parse_overrides(items)
    except EdgebvitError as exc:
        raise EdgebvitError(f"--set: {exc}") from None


def resolve_run_config(*, recipe=None, config_file=None, options: Dict[str, Any], overrides=(), model_overrides=()):
    """defaults < recipe < --config FILE < command-line options < key=value overrides."""
    from edgebvit.training.config import DEFAULT_BATCH_SIZE, RunConfig, load_config_file, merge, parse_overrides
    from edgebvit.training.recipes import get_recipe

    file_keys = load_config_file(Path(config_file)) if config_file else {}
    cli_keys = {k: v for k, v in options.items() if v is not None}
    kv = parse_overrides(overrides)
    # The recipe's learning rate scales with the final batch size: resolve that first.
    probe = merge(merge(merge(RunConfig(), file_keys), cli_keys), kv)
    cfg = RunConfig()
    if recipe:
        # A recipe is a fixed design at batch 128 unless a batch is given; its lr scales with it.
        batch = probe.batch_size or DEFAULT_BATCH_SIZE
        cfg = merge(cfg, get_recipe(recipe, batch))
        cfg.recipe, cfg.batch_size = recipe, batch
    cfg = merge(merge(merge(cfg, file_keys), cli_keys), kv)
    if model_overrides:
        cfg.model_overrides = {**cfg.model_overrides, **_parse_model_overrides(model_overrides)}
    if cfg.distill.teacher and cfg.distill.mode == "none":
        cfg.distill.mode = "soft"  # a teacher alone means the papers' KD
    return cfg.validate()


_RECIPE_HELP = (
    "Start from a named recipe: binaryvit (docs/papers.md 1.7: Adam, cosine, KD only T=1, crop+flip), "
    "bhvit (adds the L_re regularizer in the last 10%, CE/KD 0.2/0.8), deit (float: AdamW 0.05, "
    "warm-up, RandAugment, mixup/cutmix, label smoothing). The lr scales as 5e-4 x batch/512."
)


@click.command("train", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--model", "model_name", default=None, help="Registered model name (see `edgebvit models`). [default: binaryvit_tiny_32]")
@click.option("--data", default=None,
              help="fashion_mnist, mnist, cifar10, cifar100, an .npz file, or an image folder (one subfolder per class). [default: fashion_mnist]")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Where the built-in dataset's files are (default: Debian/Keras locations).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML/JSON run config (same keys as RUN_DIR/config.json, any subset).")
@click.option("--recipe", type=click.Choice(["binaryvit", "bhvit", "deit"]), default=None, help=_RECIPE_HELP)
@click.option("--teacher", type=click.Path(file_okay=False), default=None,
              help="Finished run directory of a float teacher: distil from its model.keras (soft KD unless distill.mode says hard).")
@click.option("--epochs", type=int, default=None, help="[default: 3]")
@click.option("--batch-size", type=int, default=None, help="Global batch. [default: auto: 128, or 32 when 128 would give fewer than 500 optimizer steps]")
@click.option("--lr", "learning_rate", type=float, default=None, help="Peak learning rate (cosine decay). [default: 1e-3]")
@click.option("--optimizer", type=click.Choice(["adam", "adamw", "bop"]), default=None,
              help="adam; adamw (decoupled weight decay, never on binary kernels); bop (Bop for binary kernels, Adam for the rest). [default: adam]")
@click.option("--warmup-epochs", type=float, default=None)
@click.option("--weight-decay", type=float, default=None)
@click.option("--label-smoothing", type=float, default=None)
@click.option("--val-fraction", type=float, default=None, help="Training data held out for validation (selects best.keras).")
@click.option("--seed", type=int, default=None)
@click.option("--strategy", type=click.Choice(["default", "mirrored", "multi_worker"]), default=None,
              help="tf.distribute: mirrored = all local GPUs (else logical CPUs); multi_worker = the machines in TF_CONFIG.")
@click.option("--kernels", type=click.Choice(["fused", "reference"]), default=None,
              help="Training kernels: fused (XLA-fused element-wise layers, the default) or reference (plain TF graphs); same math.")
@click.option("--steps-per-epoch", type=int, default=None, help="Cap steps per epoch (smoke runs).")
@click.option("--max-train-samples", type=int, default=None)
@click.option("--max-test-samples", type=int, default=None)
@click.option("--set", "model_overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a model config field, e.g. --set depths=6 --set pool_branches=[3].")
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="Run directory to create (default runs/<model>).")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), default=None,
              help="Continue a killed run at its last finished epoch, optimizer and schedule state included "
                   "(every other option comes from its config.json).")
@click.option("--dry-run", is_flag=True, help="Print the resolved configuration and exit (with --resume: the saved one).")
@click.pass_context
def command(ctx: click.Context, overrides, model_name, data, data_dir, config_file, recipe, teacher, epochs, batch_size, learning_rate,
            optimizer, warmup_epochs, weight_decay, label_smoothing, val_fraction, seed, strategy, kernels, steps_per_epoch,
            max_train_samples, max_test_samples, model_overrides, out, resume_dir, dry_run) -> None:
    """Train a model; writes config, checkpoints, metrics (CSV/JSON), TensorBoard logs and the model.

    KEY=VALUE arguments override any run config key, dotted (optim.learning_rate=5e-4,
    augment.mixup_alpha=0.8, distill.temperature=3) or by a unique field name (pad_crop=4).
    Precedence: defaults < --recipe < --config FILE < options < KEY=VALUE.

    \b
    Examples:
      edgebvit train --model cnn_small_32 --epochs 3 --out runs/teacher
      edgebvit train --recipe binaryvit --teacher runs/teacher --epochs 6 --out runs/student
      edgebvit train --resume runs/student
    """
    from edgebvit.training.config import describe

    if resume_dir:
        # A resumed run is the run that was started: every setting comes from its config.json.
        # Any other option would be silently ignored, so it is refused instead.
        given = [f"--{name.replace('_', '-')}" for name in ctx.params
                 if name not in ("resume_dir", "dry_run", "overrides")
                 and ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
        if overrides:
            given.append("KEY=VALUE")
        if given:
            raise EdgebvitError(f"--resume takes its settings from the run's config.json; drop {', '.join(given)}")
        run_dir = Path(resume_dir)
        from edgebvit.training.rundir import resume_config

        cfg = resume_config(run_dir)
        if dry_run:
            click.echo(describe(cfg))
            return
    else:
        options = {
            "model": model_name, "data": data, "data_dir": data_dir, "epochs": epochs, "batch_size": batch_size,
            "optim.learning_rate": learning_rate, "optim.optimizer": optimizer,
            "optim.warmup_epochs": warmup_epochs, "optim.weight_decay": weight_decay,
            "augment.label_smoothing": label_smoothing, "val_fraction": val_fraction, "seed": seed,
            "strategy": strategy, "kernels": kernels, "steps_per_epoch": steps_per_epoch, "max_train_samples": max_train_samples,
            "max_test_samples": max_test_samples, "distill.teacher": teacher,
        }
        cfg = resolve_run_config(recipe=recipe, config_file=config_file, options=options, overrides=overrides,
                                 model_overrides=model_overrides)
        run_dir = Path(out) if out else Path("runs") / cfg.model
        # Fail on a bad model name or option before loading data or creating the run directory.
        import edgebvit.models  # noqa: F401  (registers the zoo)
        from edgebvit.models.registry import resolve_config

        resolve_config(cfg.model, **cfg.model_overrides).validate()
        if dry_run:
            click.echo(describe(cfg))
            return

    from edgebvit.training import train

    result = train(cfg, run_dir, resume=bool(resume_dir), log=click.echo)
    s = result.summary
    click.echo(
        f"test accuracy {result.test_accuracy:.2%} on {s['test_images']} images | "
        f"{s['epochs']} epochs, {s['optimizer_steps']} optimizer steps | "
        f"{result.train_seconds:.0f} s ({result.images_per_second:.0f} images/s)"
    )
    click.echo(f"run directory: {run_dir}  (model: {run_dir / 'model.keras'})")
