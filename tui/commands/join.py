"""`ftui join RUN --node-rank K [--master-addr HOST] [--master-port PORT]`: another node of a multi-node run.

`ftui run` starts node 0 and prints this command for every other node. Run it on that node's machine, which
sees the same run dir (shared storage) and has ftui at the same path: it starts the node's detached supervisor
on the run's launch.sh (runners/launch/launcher.py join). Imports neither Textual nor torch.
"""
from __future__ import annotations

from runners import rundir
from runners.launch import launcher
from tui.commands.run import _common, _Parser, find


def main(command: str, argv: list[str]) -> int:
    p = _Parser(prog="ftui join")
    p.add_argument("run", help="the run dir (as ftui run printed it), its id, or a unique part of the id")
    p.add_argument("--node-rank", type=int, required=True, metavar="K", help="this node's rank, 1 to nodes-1")
    p.add_argument("--master-addr", metavar="HOST", help="node 0's name or address (default: as the run recorded it)")
    p.add_argument("--master-port", type=int, metavar="PORT", help="node 0's rendezvous port (default: as recorded)")
    _common(p)
    args = p.parse_args(argv)
    run_dir = find(rundir.default_runs_dir(args.runs_dir), args.run)
    where = launcher.join(run_dir, args.node_rank, args.master_addr, args.master_port)
    status = rundir.read_status(where) or {}
    print(f"node {args.node_rank} of {run_dir.name}: {status.get('state')} on {status.get('host')} (supervisor pid "
          f"{status.get('pid')}, status {where / rundir.STATUS_FILE}); every node's ranks log to {run_dir / rundir.LOG_FILE}")
    print(f"stop the whole run from any node with: ftui stop {run_dir}")
    return 0
