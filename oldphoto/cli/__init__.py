"""The `oldphoto` command line: one Typer app; each area registers its commands from its own module."""
import typer

from oldphoto import __version__

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="oldphoto: restore scanned old photographs, with a record of everything done to each.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"oldphoto {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Restore scanned old photographs (Wan et al. latent space translation) and catalog what was done."""


def _register_all() -> None:
    # Each module owns its commands: restore (pipeline), archive (flow), catalog, review, data, train, bench.
    from oldphoto.cli import archive, bench, catalog, data, restore, review, train

    for module in (restore, archive, catalog, review, data, train, bench):
        module.register(app)


_register_all()


def main() -> None:
    app()
