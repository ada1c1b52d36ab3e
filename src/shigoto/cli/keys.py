"""``shigoto keys``: encryption keys for fields marked ``encrypt=[...]``."""

from __future__ import annotations

import click

from ..security.encryption import ENV_VAR, KeyRing, generate_key
from ..security.rotation import rotate_keys
from .render import make_console
from .session import open_app, run, url_option


@click.group("keys")
def keys() -> None:
    """Encryption keys: generate one, see which are configured, rotate stored jobs."""


@keys.command("generate")
def generate() -> None:
    """Print a new random key (base64url, 256 bits). Put it first in
    SHIGOTO_ENCRYPTION_KEYS (comma-separated) to encrypt with it."""
    click.echo(generate_key())


@keys.command("list")
def list_keys() -> None:
    """The key ids configured in SHIGOTO_ENCRYPTION_KEYS (never the keys)."""
    ring = KeyRing.from_env()
    if not ring.ids:
        click.echo(f"no keys configured ({ENV_VAR} is not set)")
        return
    for index, kid in enumerate(ring.ids):
        click.echo(f"{kid}  {'encrypts + decrypts' if index == 0 else 'decrypts'}")


@keys.command("rotate")
@click.option("--dry-run", is_flag=True, help="Only count the jobs that would be re-encrypted.")
@url_option
@click.pass_context
def rotate(ctx: click.Context, dry_run: bool) -> None:
    """Re-encrypt every stored job's encrypted fields under the first key of
    SHIGOTO_ENCRYPTION_KEYS (keep the old keys listed after it while this runs).
    Active jobs are left alone; run again once they have finished."""
    app = open_app(ctx)
    report = run(app, lambda: rotate_keys(app, dry_run=dry_run))
    console = make_console()
    verb = "would re-encrypt" if dry_run else "re-encrypted"
    console.print(
        f"{verb} {report.rotated} job(s) under key {report.key}; {report.current} already "
        f"current; {report.skipped} changed meanwhile (run again); "
        f"{report.active} active job(s) not touched"
    )
    for line in report.failed:
        console.print(f"[red]cannot decrypt[/red] {line}")
    if report.failed:
        ctx.exit(1)
