"""`trainctl ui`: the browser views — live monitor, flagged examples, comparison viewer, evolution
viewer, rejections — served from this home folder (cli/web/). Starts in well under a second; never
imports torch."""

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
def ui_cmd(
    home: HomeOpt = None,
    port: int = typer.Option(8080, "--port", help="TCP port (0 = any free one)."),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on; anything but loopback needs a token."
    ),
    token: Optional[str] = typer.Option(
        None,
        "--token",
        help="Access token every request must carry "
        "(generated and printed when another host is given without one).",
    ),
    open_: bool = typer.Option(False, "--open", help="Open the dashboard in a browser."),
) -> None:
    """Browser views of this home: live monitor, flagged examples, comparison, evolution,
    rejections."""
    from cli.web.server import is_loopback, serve, wait_forever

    h = Home.open(home, create=False)
    if not is_loopback(host) and not token:
        token = secrets.token_urlsafe(18)
    try:
        server = serve(h, host, port, token)
    except OSError as exc:
        raise TrainctlError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} "
            "— pick another with --port (0 = any free one)"
        ) from None
    urls = usable_urls(host, server.server_address[1], token)
    console.print(
        f"trainctl ui for {h.root}: [bold]{urls[0]}[/bold]  (Ctrl-C stops it)",
        highlight=False,
        soft_wrap=True,
    )
    for other in urls[1:]:
        console.print(f"  also {other}", highlight=False, soft_wrap=True)
    if not is_loopback(host):
        console.print(
            "[yellow]listening beyond this machine: every request needs the token in that "
            "address (after the first visit the browser keeps it in a cookie)[/yellow]"
        )
    if open_:
        webbrowser.open(urls[0])
    wait_forever(server)


def usable_urls(host: str, port: int, token: str | None) -> list[str]:
    """The addresses to open: for a wildcard host (0.0.0.0, ::), this machine's name and addresses
    that another machine can reach (never 0.0.0.0, which no browser can use); else the host
    itself."""
    hosts = machine_addresses() if host in ("0.0.0.0", "::", "") else [host]
    query = f"?token={token}" if token else ""
    return [f"http://{f'[{h}]' if ':' in h else h}:{port}/{query}" for h in hosts or ["127.0.0.1"]]


def machine_addresses() -> list[str]:
    """This machine's host name (when it resolves to a usable address) and its non-loopback
    addresses: the one its default route leaves from first (a UDP socket's `connect` picks it
    without sending anything)."""
    import ipaddress
    import socket

    found: list[str] = []

    def usable(addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr.split("%")[0])
        except ValueError:
            return False
        return not (ip.is_loopback or ip.is_link_local or ip.is_unspecified)

    for family, probe in ((socket.AF_INET, "10.255.255.255"), (socket.AF_INET6, "fd00::1")):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect((probe, 9))
                addr = s.getsockname()[0]
            if usable(addr) and addr not in found:
                found.append(addr)
        except OSError:
            pass
    name = socket.gethostname()
    try:
        resolved = {str(info[4][0]) for info in socket.getaddrinfo(name, None)}
    except OSError:
        resolved = set()
    for addr in sorted(resolved):
        if usable(addr) and addr not in found:
            found.append(addr)
    if name and any(usable(a) for a in resolved):
        found.insert(0, name)
    return found
