"""The `edgebvit` command line: one click group, one module per command under commands/.

Command modules import TensorFlow lazily (inside the command), so `edgebvit --help` is instant.
"""
from __future__ import annotations

import sys

import click

import edgebvit
from edgebvit.errors import EdgebvitError


class _UserError(click.ClickException):
    """Prints an EdgebvitError as one line, `error: ...`, with its own exit code."""

    def __init__(self, err: EdgebvitError):
        super().__init__(str(err))
        self.exit_code = err.exit_code

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class EdgebvitGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EdgebvitError as err:
            raise _UserError(err) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=EdgebvitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(edgebvit.__version__, prog_name="edgebvit")
def cli() -> None:
    """Train, export, verify and benchmark binary vision transformers for ARM64 edge devices.

    \b
    Typical flow:
      edgebvit train --model binaryvit_tiny_32 --data fashion_mnist --epochs 3 --out runs/bvit
      edgebvit export runs/bvit --tflite
      edgebvit bench runs/bvit/model.tflite
    """


def _register() -> None:
    from edgebvit.commands import bench, export, inspect, models, study, train

    for mod in (train, export, inspect, bench, models, study):
        cli.add_command(mod.command)


_register()


def main() -> None:
    cli(prog_name="edgebvit")


if __name__ == "__main__":
    main()
