"""One-machine multi-process runs listen on loopback only.

What listens in a torch job, and how each one is kept on loopback:

- The launcher's rendezvous store (torchrun and ``accelerate launch`` run torch elastic's agent). A
  ``TCPStore`` server binds every interface whatever host name it is given (``::``), and no launcher option
  gives it a listen address. So the agent does not host one: the rendezvous is the c10d backend on a file
  store (``--rdzv-backend=c10d --rdzv-conf=store_type=file``, no TCP at all), the store the agent would
  share with the workers is turned off (``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``), and the address it hands
  the workers is ``--local-addr=127.0.0.1`` (``PET_LOCAL_ADDR`` for accelerate, which passes it through).
- The process-group store the workers rendezvous on (``MASTER_ADDR:MASTER_PORT``, hosted by rank 0 under
  deepspeed, torchrun and accelerate alike). :func:`hold_loopback_store`, called by rank 0 before
  training, starts that ``TCPStore`` server on a socket it bound to ``MASTER_ADDR`` (``master_listen_fd``);
  torch's own ``env://`` rendezvous opens the store multi-tenant and so reuses this server.
- The collectives' transport sockets: gloo and NCCL bind the address of one interface
  (``GLOO_SOCKET_IFNAME`` / ``NCCL_SOCKET_IFNAME``; by default the host name's address, often a public one):
  ``lo`` unless the user set them.
"""
from __future__ import annotations

import ipaddress
import os
import socket
import sys
from datetime import timedelta
from typing import Any

LOOPBACK = "127.0.0.1"
LOOPBACK_IF = "lo0" if sys.platform == "darwin" else "lo"
_held: list[Any] = []  # the rank-0 store server lives as long as the process


def launcher_env(launcher: str) -> dict[str, str]:
    """Environment for a one-machine multi-process job; a value the user already exported wins."""
    if launcher == "python":
        return {}
    env = {"GLOO_SOCKET_IFNAME": LOOPBACK_IF, "NCCL_SOCKET_IFNAME": LOOPBACK_IF}
    if launcher in ("torchrun", "accelerate"):
        env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    if launcher == "accelerate":
        env["PET_LOCAL_ADDR"] = LOOPBACK  # torchrun's --local-addr; accelerate launch has no flag for it
    return {k: os.environ.get(k, v) for k, v in env.items()}


def torchrun_rendezvous() -> list[str]:
    """torchrun flags: a file-store rendezvous (no listener) that hands the workers a loopback address."""
    return ["--rdzv-backend=c10d", "--rdzv-conf=store_type=file", f"--local-addr={LOOPBACK}"]


def _loopback_ip(host: str) -> str | None:
    try:
        ip = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)[0][4][0]
        # an IP family's sockaddr starts with the address string (typeshed also allows AF_CAN's int)
        return ip if isinstance(ip, str) and ipaddress.ip_address(ip).is_loopback else None
    except (OSError, ValueError, IndexError):
        return None


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) resolves to a loopback address."""
    return _loopback_ip(host) is not None


def hold_loopback_store() -> bool:
    """On rank 0 of a job rendezvousing on a loopback ``MASTER_ADDR``: host its TCPStore on loopback.

    Returns whether it did. Nothing to do without a launcher (no ``RANK``), on other ranks, for a store the
    launcher hosts (``TORCHELASTIC_USE_AGENT_STORE=True``) or for a master address that is not loopback.
    A launcher's world of one process counts: the Trainer may still open a process group on it.
    """
    env = os.environ
    if env.get("RANK") != "0" or _held:
        return False
    if env.get("TORCHELASTIC_USE_AGENT_STORE") == "True" or not env.get("MASTER_PORT"):
        return False
    ip = _loopback_ip(env.get("MASTER_ADDR", ""))
    if ip is None:
        return False
    import torch.distributed as dist

    port = int(env["MASTER_PORT"])
    sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ip, port))
        sock.listen(max(128, int(env.get("WORLD_SIZE", 1))))
    except OSError:
        sock.close()
        raise
    # the server takes the fd over; the same port makes torch's multi-tenant env:// store reuse it
    _held.append(dist.TCPStore(ip, port, int(env.get("WORLD_SIZE", 1)), True, timedelta(minutes=30), wait_for_workers=False,
                               multi_tenant=True, master_listen_fd=sock.detach(),
                               use_libuv=env.get("USE_LIBUV", "1") == "1"))
    return True
