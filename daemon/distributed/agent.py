"""The torchrun agent of one job on this machine: `python -m daemon.distributed.agent <torchrun
arguments>`.

It is torch's own launcher (torch.distributed.run) with two differences:
- it dies with the job's worker (the kernel sends it SIGTERM when the worker dies, even by kill
  -9), which makes it stop its ranks; they checkpoint;
- with static rendezvous on 127.0.0.1, the store it serves listens on 127.0.0.1 only (torch's
  TCPStore binds every interface unless it is handed an already bound socket);
- it takes a stop once. torchrun raises SignalException from its handler at every signal: the first
  makes it pass the stop to the ranks and wait (`--shutdown-timeout`) while they finish their step
  and save a checkpoint; a second, raised inside that wait, abandons it, and a third can leave the
  agent hung at exit with its log threads running. A killed daemon sends the same stop several
  times (daemon/stop_signals.py), so repeats are ignored here.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from typing import Any

_sockets: list[socket.socket] = []  # kept open for the agent's life: the store serves on them


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket listening on `host`:`port` only, to hand to torch's TCPStore (`master_listen_fd`),
    which otherwise binds every interface. Keep it open as long as the store serves."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(512)
    return sock


def _loopback_store(make: Any) -> Any:
    def store(
        host_name: str,
        port: int,
        world_size: Any = None,
        is_master: bool = False,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        if (
            is_master
            and host_name in ("127.0.0.1", "localhost")
            and "master_listen_fd" not in kwargs
        ):
            sock = listening_socket("127.0.0.1", port)
            _sockets.append(sock)
            kwargs["master_listen_fd"] = sock.fileno()
        return make(host_name, port, world_size, is_master, *args, **kwargs)

    return store


def _stop_once(handler: Any) -> Any:
    stopping: list[int] = []

    def once(signum: int, frame: Any) -> None:
        if stopping:
            # os.write, not print: the handler may run while the main thread is inside a write to
            # stderr
            os.write(
                2,
                f"trainctl agent: {signal.Signals(signum).name} "
                "again — already stopping; the ranks are "
                "saving a checkpoint\n".encode(),
            )
            return
        stopping.append(signum)
        handler(signum, frame)

    return once


def main(argv: list[str]) -> None:
    from torch.distributed import TCPStore
    from torch.distributed.elastic.multiprocessing import api as elastic_processes
    from torch.distributed.elastic.rendezvous import static_tcp_rendezvous
    from torch.distributed.run import main as torchrun

    from daemon.parent_death import die_with_parent

    die_with_parent()
    if getattr(static_tcp_rendezvous, "TCPStore", None) is TCPStore:
        static_tcp_rendezvous.TCPStore = _loopback_store(TCPStore)
    # torchrun installs this module-level handler (looked up when it starts the ranks, at every
    # restart)
    if callable(getattr(elastic_processes, "_terminate_process_handler", None)):
        handler = elastic_processes._terminate_process_handler
        elastic_processes._terminate_process_handler = _stop_once(handler)
    torchrun(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
