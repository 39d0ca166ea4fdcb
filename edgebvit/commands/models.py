"""`edgebvit models`: the registry, with parameter and MAC counts by precision."""
from __future__ import annotations

import json

import click


@click.command("models")
@click.argument("pattern", default="*")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def command(pattern: str, as_json: bool) -> None:
    """List registered models matching PATTERN (shell-style) with their parameter and MAC counts.

    Counts come from building each model and profiling it as `larq.models.summary` does; attention
    matmuls are not layers and are counted by `edgebvit export`/`inspect` instead.
    """
    import edgebvit.models as zoo
    from edgebvit.models.profile import profile_model

    rows = []
    for name in zoo.list_models(pattern):
        info = zoo.get_model_info(name)
        stats = profile_model(zoo.create_model(name))
        rows.append({
            "name": name, "family": info.family, "role": info.role,
            "input_shape": list(info.input_shape), "num_classes": info.num_classes,
            **stats.to_dict(), "paper_top1": info.paper_top1, "description": info.description,
        })
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no model matches {pattern!r}")
        return
    header = f"{'name':<28} {'role':<8} {'input':<12} {'binary params':>14} {'float params':>13} " \
             f"{'binary MACs':>12} {'float MACs':>11} {'paper top-1':>11}"
    click.echo(header)
    click.echo("-" * len(header))
    for r in rows:
        top1 = f"{r['paper_top1']:.1f}" if r["paper_top1"] is not None else "-"
        click.echo(
            f"{r['name']:<28} {r['role']:<8} {'x'.join(map(str, r['input_shape'])):<12} "
            f"{r['binary_params']:>14,} {r['float_params']:>13,} {r['binary_macs']:>12,} "
            f"{r['float_macs']:>11,} {top1:>11}"
        )
