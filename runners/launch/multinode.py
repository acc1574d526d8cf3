"""Runs over several machines (``hardware.nodes`` > 1): one ``launch.sh`` that every node runs as it is.

The script reads its node's place from the environment, with defaults written at launch:
``FTUI_NODE_RANK`` (this node, 0 to nodes-1; default 0), ``FTUI_NNODES`` (default ``hardware.nodes``),
``FTUI_MASTER_ADDR`` and ``FTUI_MASTER_PORT`` (node 0's rendezvous address, the same on every node). Each node
starts its own launcher (no ssh), which starts that node's ``num_processes`` ranks:

- torchrun: the static rendezvous (``--nnodes --node_rank --master_addr --master_port``): node 0's agent hosts
  the store, so the global ranks of node K are K x num_processes onwards and rank 0 is on node 0;
- accelerate: ``accelerate.yaml`` for all machines, its node's ``--machine_rank`` and the address on the
  command line (accelerate's ``num_processes`` counts every machine's processes);
- deepspeed: ``--no_ssh --node_rank`` with the run's ``hostfile`` (one line per node; without ssh its names
  are placeholders).

Unlike a one-machine run (runners/loopback.py) node 0 must listen where the others can reach it: its
launcher's store binds every interface at the master port. Nothing else changes: the run dir is on storage
every node sees, and the control files in it reach every rank (rank 0 reads them and broadcasts).
"""
from __future__ import annotations

import os
import re
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path

from runners import loopback
from runners.errors import UserError

NODE_RANK_ENV = "FTUI_NODE_RANK"
NNODES_ENV = "FTUI_NNODES"
MASTER_ADDR_ENV = "FTUI_MASTER_ADDR"
MASTER_PORT_ENV = "FTUI_MASTER_PORT"
HOSTFILE = "hostfile"
_ADDR = re.compile(r"^[A-Za-z0-9._:-]+$")  # a host name, an IPv4 or IPv6 address: safe unquoted in launch.sh
_REF = re.compile(r"\$\{FTUI_[A-Z_]+\}|\$\(\(")  # what launch.sh expands in a command word


@dataclass(frozen=True)
class Rendezvous:
    """Node 0's address, where every node's launcher meets."""

    addr: str
    port: int

    @property
    def on_loopback(self) -> bool:
        return loopback.is_loopback(self.addr)


def _ref(name: str) -> str:
    return "${" + name + "}"


def free_port() -> int:
    """A port free on every interface of this machine right now (node 0 listens on all of them)."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def check_addr(addr: str, what: str = "--master-addr") -> str:
    if not _ADDR.match(addr):
        raise UserError(f"{what} '{addr}' is not a host name or an IP address. Give the name or address of node 0 "
                        "that every other node can reach.")
    return addr


def check_port(port: object, what: str = "--master-port") -> int:
    try:
        value = int(str(port))
    except ValueError:
        value = -1
    if not 0 < value < 65536:
        raise UserError(f"{what} must be a TCP port number (1-65535), got {port!r}.")
    return value


def rendezvous(addr: str | None = None, port: int | None = None) -> Rendezvous:
    """The given address, else ``$FTUI_MASTER_ADDR``/``$FTUI_MASTER_PORT``, else this machine's name and a free port."""
    env_addr, env_port = os.environ.get(MASTER_ADDR_ENV), os.environ.get(MASTER_PORT_ENV)
    host = check_addr(addr) if addr else check_addr(env_addr, f"${MASTER_ADDR_ENV}") if env_addr else socket.getfqdn()
    if port is not None:
        number = check_port(port)
    else:
        number = check_port(env_port, f"${MASTER_PORT_ENV}") if env_port else free_port()
    return Rendezvous(host, number)


def for_run(nodes: int, addr: str | None, port: int | None) -> Rendezvous | None:
    """A launch's rendezvous: None for one machine (which listens on loopback only, so the flags are wrong there)."""
    if nodes > 1:
        return rendezvous(addr, port)
    if addr or port:
        raise UserError("--master-addr and --master-port place the nodes of a multi-node run, but this spec's "
                        "hardware.nodes is 1. Set hardware.nodes to the number of machines, or leave the flags out.")
    return None


def command(launcher: str, program: str, per_node: int, run_dir: Path) -> list[str]:
    """One node's launcher command; ``${FTUI_...}`` words are expanded by launch.sh on each node."""
    nnodes, node = _ref(NNODES_ENV), _ref(NODE_RANK_ENV)
    addr, port = _ref(MASTER_ADDR_ENV), _ref(MASTER_PORT_ENV)
    entry = ["-m", "runners.train", "--run-dir", str(run_dir)]
    if launcher == "torchrun":
        return [program, f"--nnodes={nnodes}", f"--node_rank={node}", f"--nproc_per_node={per_node}",
                "--rdzv_backend=static", f"--master_addr={addr}", f"--master_port={port}", *entry]
    if launcher == "accelerate":
        return [program, "launch", "--config_file", str(run_dir / "accelerate.yaml"),
                f"--num_processes=$(({NNODES_ENV} * {per_node}))", f"--num_machines={nnodes}", f"--machine_rank={node}",
                f"--main_process_ip={addr}", f"--main_process_port={port}", "--rdzv_backend=static", "--same_network",
                *entry]
    if launcher == "deepspeed":
        return [program, f"--hostfile={run_dir / HOSTFILE}", "--no_ssh", f"--node_rank={node}", f"--num_nodes={nnodes}",
                f"--num_gpus={per_node}", f"--master_addr={addr}", f"--master_port={port}", "--module", "runners.train",
                "--run-dir", str(run_dir)]
    raise UserError(f"hardware.nodes > 1 needs torchrun, accelerate or deepspeed as the launcher, not '{launcher}'.")


def shell_word(word: str) -> str:
    """A command word for launch.sh: double-quoted where it expands one of our variables, else shell-quoted."""
    if _REF.search(word):
        if any(c in word for c in '"\\`'):
            raise UserError(f"Cannot write the launcher argument {word!r} into launch.sh.")
        return f'"{word}"'
    return shlex.quote(word)


def prelude(nodes: int, rdzv: Rendezvous) -> str:
    """launch.sh's lines that give every node its place, with the launch-time defaults."""
    return ("# The same script on every node: each sets FTUI_NODE_RANK (0 = the node that hosts the rendezvous).\n"
            "# FTUI_NNODES, FTUI_MASTER_ADDR and FTUI_MASTER_PORT must be the same on every node.\n"
            f'export {NODE_RANK_ENV}="${{{NODE_RANK_ENV}:-0}}" {NNODES_ENV}="${{{NNODES_ENV}:-{nodes}}}"\n'
            f'export {MASTER_ADDR_ENV}="${{{MASTER_ADDR_ENV}:-{check_addr(rdzv.addr)}}}" '
            f'{MASTER_PORT_ENV}="${{{MASTER_PORT_ENV}:-{rdzv.port}}}"\n')


def node_env(rdzv: Rendezvous) -> dict[str, str]:
    """The collectives' transport: loopback when every node is this machine (its rendezvous is on loopback),
    else the interface gloo and NCCL pick (set GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME to choose one)."""
    if not rdzv.on_loopback:
        return {}
    env = {"GLOO_SOCKET_IFNAME": loopback.LOOPBACK_IF, "NCCL_SOCKET_IFNAME": loopback.LOOPBACK_IF}
    return {k: os.environ.get(k, v) for k, v in env.items()}


def hostfile(nodes: int, per_node: int) -> str:
    """deepspeed's hostfile: one line per node, ``slots`` its processes."""
    lines = "".join(f"node{k} slots={per_node}\n" for k in range(nodes))
    return ("# Written by ftui. launch.sh runs deepspeed on every node with --no_ssh --node_rank, so these names are\n"
            "# placeholders; to start all nodes from node 0 over ssh instead, write the real host names here and run\n"
            "# deepspeed without --no_ssh and --node_rank.\n" + lines)


def join_command(run_dir: Path, node: int, rdzv: Rendezvous) -> str:
    return shlex.join(["ftui", "join", str(run_dir), "--node-rank", str(node), "--master-addr", rdzv.addr,
                       "--master-port", str(rdzv.port)])


def announce(run_dir: Path, nodes: int, rdzv: Rendezvous) -> list[str]:
    """What `ftui run` says about a multi-node run: where node 0 listens, and the command for every other node."""
    lines = [f"a {nodes}-node run: node 0 runs here and listens on {rdzv.addr}:{rdzv.port} (every interface) for the "
             "other nodes' launchers.",
             "start each other node on a machine that sees this run dir (shared storage) and has this ftui at the same "
             "path:"]
    lines += [f"  {join_command(run_dir, k, rdzv)}" for k in range(1, nodes)]
    return lines
