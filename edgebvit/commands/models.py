"""`edgebvit models`: the registry, with parameter and MAC counts by precision."""
from __future__ import annotations

import json

import click

from edgebvit.errors import EdgebvitError
from edgebvit.formatting import human_count


@click.command("models")
@click.argument("pattern", default="*")
@click.option("--role", type=click.Choice(["student", "teacher"]), default=None,
              help="Only students (binary) or teachers (full precision).")
@click.option("--family", default=None, metavar="NAME",
              help="Only one family: binaryvit, bhvit or cnn (see the family column).")
@click.option("--tag", default=None, metavar="TAG", help="Only variants with this tag: imagenet, 32x32 or ladder.")
@click.option("--no-counts", is_flag=True, help="List names and metadata only; build nothing (instant).")
@click.option("--refresh", is_flag=True, help="Rebuild every listed model to recount, ignoring the cache.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON (exact counts).")
def command(pattern: str, role: str, family: str, tag: str, no_counts: bool, refresh: bool,
            as_json: bool) -> None:
    """List registered models matching PATTERN (shell-style, e.g. 'binaryvit_*_32*').

    For each model: binary (1-bit) and float parameters, binary and float MACs per image as
    `larq.models.summary` counts them, and the ImageNet top-1 the paper reports for it.
    Float parameters include BatchNorm's moving statistics, as larq counts them. The attention
    matmuls (Q.K^T, P.V) are not layers, so they are in neither MAC column: `edgebvit export` and
    `edgebvit inspect` count them from the flatbuffer on their own line.

    Counting builds the model (10-30 s for an ImageNet size, a few seconds for a 32x32 one); counts
    are cached under ~/.cache/edgebvit (or $EDGEBVIT_CACHE_DIR) and recomputed automatically when
    a model's config or the model code changes.
    """
    import sys

    import edgebvit.models as zoo
    from edgebvit.models.profile import cached_stats, zoo_stats

    if family is not None and family not in zoo.families():
        raise EdgebvitError(f"unknown family {family!r}; choose from {', '.join(zoo.families())}")
    names = zoo.list_models(pattern, role=role, family=family, tag=tag)
    if not names:
        raise EdgebvitError(f"no model matches {pattern!r}"
                            + (f" in family {family}" if family else "") + (f" with tag {tag}" if tag else "")
                            + "; run `edgebvit models` to list them")
    rows = []
    for name in names:
        info = zoo.get_model_info(name)
        row = {
            "name": name, "family": info.family, "role": info.role,
            "input_shape": list(info.input_shape), "num_classes": info.num_classes,
            "paper_top1": info.paper_top1, "paper": info.paper, "description": info.description,
            "tags": list(info.tags),
        }
        if not no_counts:
            stats = None if refresh else cached_stats(name)
            if stats is None:
                click.echo(f"counting {name} (building it once; cached afterwards)...", err=True)
                stats = zoo_stats(name, refresh=refresh)
            row.update(stats.to_dict())
        rows.append(row)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    sys.stdout.flush()
    w = max([34, *(len(r["name"]) for r in rows)])  # the name column fits the longest name
    if no_counts:
        click.echo(f"{'name':<{w}} {'family':<9} {'role':<8} {'input':<12} {'paper top-1':>11}  description")
        for r in rows:
            top1 = f"{r['paper_top1']:.1f}" if r["paper_top1"] is not None else "-"
            click.echo(f"{r['name']:<{w}} {r['family']:<9} {r['role']:<8} {'x'.join(map(str, r['input_shape'])):<12} "
                       f"{top1:>11}  {r['description']}")
        return
    header = (f"{'name':<{w}} {'family':<9} {'role':<8} {'input':<12} {'bin params':>10} {'fp params':>10} "
              f"{'bin MACs':>9} {'fp MACs':>9} {'bin MAC %':>9} {'paper top-1':>11}")
    click.echo(header)
    click.echo("-" * len(header))
    for r in rows:
        top1 = f"{r['paper_top1']:.1f}" if r["paper_top1"] is not None else "-"
        click.echo(
            f"{r['name']:<{w}} {r['family']:<9} {r['role']:<8} {'x'.join(map(str, r['input_shape'])):<12} "
            f"{human_count(r['binary_params']):>10} {human_count(r['float_params']):>10} "
            f"{human_count(r['binary_macs']):>9} {human_count(r['float_macs']):>9} "
            f"{100 * r['binary_mac_share']:>8.1f}% {top1:>11}"
        )
    click.echo("MACs per image, attention matmuls excluded (see `edgebvit inspect`); "
               "paper top-1 is ImageNet-1k as reported by the paper.")

