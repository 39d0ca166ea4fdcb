"""`edgebvit train`: train a registered model on a dataset into a run directory."""
from __future__ import annotations

import json
from pathlib import Path

import click

from edgebvit.errors import EdgebvitError


def _parse_override(items):
    """`key=value` model overrides; values parse as JSON when they can (numbers, lists, bools)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise EdgebvitError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


@click.command("train")
@click.option("--model", "model_name", default="binaryvit_tiny_32", show_default=True,
              help="Registered model name (see `edgebvit models`).")
@click.option("--data", default="fashion_mnist", show_default=True,
              help="fashion_mnist, mnist, cifar10, cifar100, an .npz file, or an image folder (one subfolder per class).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Where the built-in dataset's files are (default: Debian/Keras locations).")
@click.option("--epochs", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--lr", "learning_rate", type=float, default=1e-3, show_default=True, help="Peak learning rate (AdamW, cosine decay).")
@click.option("--warmup-epochs", type=float, default=0.0, show_default=True)
@click.option("--weight-decay", type=float, default=0.0, show_default=True)
@click.option("--label-smoothing", type=float, default=0.0, show_default=True)
@click.option("--val-fraction", type=float, default=0.0, show_default=True, help="Training data held out for validation.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--steps-per-epoch", type=click.IntRange(min=1), default=None, help="Cap steps per epoch (smoke runs).")
@click.option("--max-train-samples", type=click.IntRange(min=1), default=None)
@click.option("--max-test-samples", type=click.IntRange(min=1), default=None)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a model config field, e.g. --set depth=6 --set pool_branches=[3].")
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="Run directory to create (default runs/<model>).")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), default=None,
              help="Continue a killed run from its last checkpoint (other options are taken from its config.json).")
def command(model_name, data, data_dir, epochs, batch_size, learning_rate, warmup_epochs, weight_decay,
            label_smoothing, val_fraction, seed, steps_per_epoch, max_train_samples, max_test_samples,
            overrides, out, resume_dir) -> None:
    """Train a binary ViT; writes config, checkpoints, metrics (CSV/JSON), TensorBoard logs and the model."""
    from edgebvit.config import RunConfig

    if resume_dir:
        run_dir = Path(resume_dir)
        cfg = RunConfig()
    else:
        run_dir = Path(out) if out else Path("runs") / model_name
        cfg = RunConfig(
            model=model_name, model_overrides=_parse_override(overrides), data=data, data_dir=data_dir,
            epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, warmup_epochs=warmup_epochs,
            weight_decay=weight_decay, label_smoothing=label_smoothing, val_fraction=val_fraction, seed=seed,
            steps_per_epoch=steps_per_epoch, max_train_samples=max_train_samples,
            max_test_samples=max_test_samples,
        )
        # Fail on a bad model name or option before loading data or creating the run directory.
        from edgebvit.models.registry import resolve_config

        import edgebvit.models  # noqa: F401  (registers the zoo)

        resolve_config(cfg.model, **cfg.model_overrides)

    from edgebvit.train import train

    result = train(cfg, run_dir, resume=bool(resume_dir), log=click.echo)
    s = result.summary
    click.echo(
        f"test accuracy {result.test_accuracy:.2%} on {s['test_images']} images | "
        f"{s['epochs']} epochs | {result.train_seconds:.0f} s ({result.images_per_second:.0f} images/s)"
    )
    click.echo(f"run directory: {run_dir}  (model: {run_dir / 'model.keras'})")
