"""The torchrun agent of one job on this machine: `python -m daemon.distributed.agent <torchrun arguments>`.

It is torch's own launcher (torch.distributed.run) with two differences:
- it dies with the job's worker (the kernel sends it SIGTERM when the worker dies, even by kill -9), which makes it
  stop its ranks; they checkpoint;
- with static rendezvous on 127.0.0.1, the store it serves listens on 127.0.0.1 only (torch's TCPStore binds every
  interface unless it is handed an already bound socket).
"""

from __future__ import annotations

import socket
import sys
from typing import Any

_sockets: list[socket.socket] = []  # kept open for the agent's life: the store serves on them


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket listening on `host`:`port` only, to hand to torch's TCPStore (`master_listen_fd`), which otherwise
    binds every interface. Keep it open as long as the store serves."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(512)
    return sock


def _loopback_store(make: Any) -> Any:
    def store(host_name: str, port: int, world_size: Any = None, is_master: bool = False, *args: Any,
              **kwargs: Any) -> Any:
        if is_master and host_name in ("127.0.0.1", "localhost") and "master_listen_fd" not in kwargs:
            sock = listening_socket("127.0.0.1", port)
            _sockets.append(sock)
            kwargs["master_listen_fd"] = sock.fileno()
        return make(host_name, port, world_size, is_master, *args, **kwargs)
    return store


def main(argv: list[str]) -> None:
    from torch.distributed import TCPStore
    from torch.distributed.elastic.rendezvous import static_tcp_rendezvous
    from torch.distributed.run import main as torchrun

    from daemon.worker import die_with_parent

    die_with_parent()
    if getattr(static_tcp_rendezvous, "TCPStore", None) is TCPStore:
        static_tcp_rendezvous.TCPStore = _loopback_store(TCPStore)  # type: ignore[attr-defined]
    torchrun(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
