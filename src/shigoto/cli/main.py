"""The ``shigoto`` entry point: the command group, its global options, error handling."""

from __future__ import annotations

from typing import Any

import click

from .. import __version__
from ..errors import ShigotoError
from .session import LOG_LEVELS, debugging


class ShigotoGroup(click.Group):
    """A group that turns failures into one clear line and exit status 1.

    Operators need to know what went wrong, not where in shigoto it was noticed:
    framework errors (bad URL, unknown job, ...) print their message; anything else
    prints its type and message, and its traceback only with ``--log-level debug``.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except ShigotoError as exc:
            if debugging(ctx):
                raise
            raise click.ClickException(str(exc)) from None
        except Exception as exc:
            if debugging(ctx):
                raise
            raise click.ClickException(
                f"{type(exc).__name__}: {exc} (run with --log-level debug for the traceback)"
            ) from None


@click.group(cls=ShigotoGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url",
    envvar="SHIGOTO_URL",
    metavar="URL",
    default=None,
    help="Backend URL, e.g. sqlite:///jobs.db or redis://127.0.0.1:6379/0 "
    "[env: SHIGOTO_URL; default: sqlite:///shigoto.db].",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default=None,
    help="Logging level (worker default: info; other commands: warning). "
    "'debug' also shows tracebacks of errors.",
)
@click.option(
    "--actor",
    envvar="SHIGOTO_ACTOR",
    metavar="NAME",
    default=None,
    help="Who the audit trail records for this command's actions "
    "[env: SHIGOTO_ACTOR; default: the OS user, as user@host].",
)
@click.version_option(__version__, prog_name="shigoto")
@click.pass_context
def cli(ctx: click.Context, url: str | None, log_level: str | None, actor: str | None) -> None:
    """shigoto (仕事): background jobs for Python.

    Start with `shigoto demo`; run workers with `shigoto worker module:app`;
    inspect with `shigoto stats` and `shigoto jobs list`.
    """
    obj = ctx.ensure_object(dict)
    if url:
        obj["url"] = url
    obj["log_level"] = log_level
    if actor:
        obj["actor"] = actor


def _register() -> None:
    from .dashboard import dashboard
    from .demo import demo
    from .dlq import dlq
    from .jobs import jobs
    from .scheduler import scheduler, schedules
    from .stats import stats
    from .worker import worker

    for command in (demo, dashboard, worker, jobs, stats, scheduler, schedules, dlq):
        cli.add_command(command)
    from .monitor import alerts, metrics, monitor

    for command in (alerts, monitor, metrics):
        cli.add_command(command)
    from .audit import audit
    from .keys import keys

    for command in (audit, keys):
        cli.add_command(command)
    from .batches import batches, enqueue

    for command in (enqueue, batches):
        cli.add_command(command)
    from .limits import limits

    cli.add_command(limits)


_register()


def main() -> None:
    """Console-script entry point (``shigoto``)."""
    cli(prog_name="shigoto")


if __name__ == "__main__":
    main()
