"""`trainctl ui`: the browser views — live monitor, flagged examples, comparison viewer, evolution viewer,
rejections — served from this home folder (cli/web/). Starts in well under a second; never imports torch."""

from __future__ import annotations

import secrets
import webbrowser
from typing import Optional

import typer

from cli.common import Commands, HomeOpt, console
from daemon.errors import TrainctlError
from daemon.home import Home

commands = Commands()


@commands.command("ui")
def ui_cmd(home: HomeOpt = None,
           port: int = typer.Option(8080, "--port", help="TCP port (0 = any free one)."),
           host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; anything but loopback needs "
                                    "a token."),
           token: Optional[str] = typer.Option(None, "--token", help="Access token every request must carry "
                                               "(generated and printed when another host is given without one)."),
           open_: bool = typer.Option(False, "--open", help="Open the dashboard in a browser.")) -> None:
    """Browser views of this home: live monitor, flagged examples, comparison, evolution, rejections."""
    from cli.web.server import is_loopback, serve, wait_forever

    h = Home.open(home, create=False)
    if not is_loopback(host) and not token:
        token = secrets.token_urlsafe(18)
    try:
        server = serve(h, host, port, token)
    except OSError as exc:
        raise TrainctlError(f"cannot listen on {host}:{port}: {exc.strerror or exc} — pick another with --port "
                            "(0 = any free one)") from None
    url = server.url + (f"?token={token}" if token else "")
    console.print(f"trainctl ui for {h.root}: [bold]{url}[/bold]  (Ctrl-C stops it)", highlight=False, soft_wrap=True)
    if not is_loopback(host):
        console.print("[yellow]listening beyond this machine: every request needs the token in that address[/yellow]")
    if open_:
        webbrowser.open(url)
    wait_forever(server)
