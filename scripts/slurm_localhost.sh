#!/usr/bin/env bash
# A real Slurm on this machine, for `make test-cluster`: munged, slurmdbd (on a private MariaDB, so sacct works),
# slurmctld and one slurmd per node name, all on 127.0.0.1, everything in one state dir.
#
#   scripts/slurm_localhost.sh start    install slurm-wlm and munge with apt if missing, write the configs, start the
#                                       daemons (a fresh cluster each time), wait until sinfo shows every node idle
#   scripts/slurm_localhost.sh stop     cancel the jobs, stop the daemons this script started
#   scripts/slurm_localhost.sh status   sinfo and squeue
#   scripts/slurm_localhost.sh env      the line that points the Slurm commands at this cluster
#
# Settings (environment): FTUI_SLURM_DIR (state dir, default /tmp/ftui-slurm), FTUI_SLURM_NODES (node names,
# default 2: Debian's slurmd takes -N NAME, so several run on one machine, each on its own port), FTUI_SLURM_PORT
# (the first of the ports used, default 16817), FTUI_SLURM_ACCOUNTING (1: slurmdbd + MariaDB for sacct, the
# default; 0: none, and sacct says accounting is disabled). Needs root (the daemons, apt, munge's key).
set -euo pipefail

DIR="${FTUI_SLURM_DIR:-/tmp/ftui-slurm}"
NODES="${FTUI_SLURM_NODES:-2}"
PORT="${FTUI_SLURM_PORT:-16817}"
ACCOUNTING="${FTUI_SLURM_ACCOUNTING:-1}"
CLUSTER=ftuilocal
CONF="$DIR/slurm.conf"
export SLURM_CONF="$CONF"

say() { echo "slurm_localhost: $*"; }
die() { echo "slurm_localhost: $*" >&2; exit 1; }

need_root() {
    [ "$(id -u)" = 0 ] || die "needs root (it starts munged and the Slurm daemons, and may apt-get install): run it with sudo"
}

install_missing() {
    local packages=()
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null || packages+=(slurm-wlm)
    command -v munged >/dev/null || packages+=(munge)
    if [ "$ACCOUNTING" = 1 ]; then
        command -v slurmdbd >/dev/null || packages+=(slurmdbd)
        command -v mariadbd >/dev/null || packages+=(mariadb-server)
    fi
    [ "${#packages[@]}" = 0 ] && return
    say "installing ${packages[*]} with apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${packages[@]}" >"$DIR/apt.log" 2>&1 || {
        apt-get update -q >>"$DIR/apt.log" 2>&1
        apt-get install -y -q --no-install-recommends "${packages[@]}" >>"$DIR/apt.log" 2>&1
    } || die "apt-get install ${packages[*]} failed; see $DIR/apt.log"
}

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    if munge_works; then
        say "munged: already running (its default socket answers)"
        return
    fi
    [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null
                                     chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
    install -d -o munge -g munge -m 755 /run/munge
    install -d -o munge -g munge -m 700 /var/log/munge /var/lib/munge
    chown -R munge:munge /var/log/munge /var/lib/munge  # munged refuses files another user owns
    runuser -u munge -- /usr/sbin/munged || die "munged did not start; see /var/log/munge/munged.log"
    touch "$DIR/started-munged"  # stop ends only a munged this script started
    for _ in $(seq 50); do munge_works && return; sleep 0.1; done
    die "munged does not answer; see /var/log/munge/munged.log"
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq $((seconds * 5))); do "$@" >/dev/null 2>&1 && return; sleep 0.2; done
    die "timed out after ${seconds}s waiting for $what (logs in $DIR/log)"
}

node_names() { for i in $(seq "$NODES"); do printf 'n%s ' "$i"; done; }

write_slurm_conf() {
    local cpus memory names node_lines="" i=0
    cpus=$(nproc)
    memory=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) / NODES / 2 ))
    for name in $(node_names); do
        i=$((i + 1))
        node_lines+="NodeName=$name NodeHostname=$(hostname) NodeAddr=127.0.0.1 Port=$((PORT + 10 + i)) CPUs=$cpus RealMemory=$memory State=UNKNOWN"$'\n'
    done
    names=$(node_names | tr ' ' ',' | sed 's/,$//')
    local accounting="AccountingStorageType=accounting_storage/none"
    if [ "$ACCOUNTING" = 1 ]; then
        accounting="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$((PORT + 1))"
    fi
    # no cgroups (containers rarely delegate them): processes are tracked by parentage, tasks are not bound
    cat >"$CONF" <<EOF
# Written by scripts/slurm_localhost.sh: a test cluster on 127.0.0.1 ($NODES node name(s) on one machine)
ClusterName=$CLUSTER
SlurmctldHost=$(hostname)(127.0.0.1)
SlurmctldPort=$PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
$accounting
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
KillWait=10
MinJobAge=600
$node_lines
PartitionName=debug Nodes=$names Default=YES MaxTime=INFINITE State=UP
EOF
}

start_accounting() {
    [ "$ACCOUNTING" = 1 ] || return 0
    mkdir -p "$DIR/db"
    mariadb-install-db --no-defaults --datadir="$DIR/db" --user=root --auth-root-authentication-method=normal \
        --skip-test-db >"$DIR/log/db-install.log" 2>&1 || die "mariadb-install-db failed; see $DIR/log/db-install.log"
    (mariadbd --no-defaults --datadir="$DIR/db" --user=root --bind-address=127.0.0.1 --port=$((PORT + 2)) \
        --socket="$DIR/run/db.sock" --pid-file="$DIR/run/db.pid" --log-error="$DIR/log/db.log" \
        --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1 &)
    wait_for 60 "MariaDB" mariadb --no-defaults -S "$DIR/run/db.sock" -uroot -e "select 1"
    mariadb --no-defaults -S "$DIR/run/db.sock" -uroot -e "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'ftui-local';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
    cat >"$DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$((PORT + 1))
SlurmUser=root
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$((PORT + 2))
StorageUser=slurm
StoragePass=ftui-local
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DIR/slurmdbd.conf"  # slurmdbd refuses a config others can read
    slurmdbd
    wait_for 60 "slurmdbd" sacctmgr -n list cluster
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
    sacctmgr -i add account ftui Cluster="$CLUSTER" Description=ftui-tests Organization=ftui >/dev/null
    sacctmgr -i add user "$(id -un)" Account=ftui >/dev/null
}

all_idle() { [ "$(sinfo -h -N -o '%t' | sort -u)" = idle ] && [ "$(sinfo -h -N -o '%N' | wc -l)" = "$NODES" ]; }

start() {
    need_root
    [ -f "$DIR/run/slurmctld.pid" ] && stop
    rm -rf "$DIR"
    mkdir -p "$DIR"/{state,run,log}
    install_missing
    start_munge
    write_slurm_conf
    start_accounting
    slurmctld -i
    wait_for 60 "slurmctld" scontrol ping
    for name in $(node_names); do
        mkdir -p "$DIR/spool/$name"
        slurmd -N "$name"
    done
    wait_for 120 "every node idle in sinfo" all_idle
    say "Slurm $(sinfo -V | cut -d' ' -f2) up: $NODES node(s) ($(node_names | sed 's/ $//')) on this machine, one slurmd each" \
        "(Debian's slurmd accepts -N NAME), partition debug, accounting $([ "$ACCOUNTING" = 1 ] && echo 'slurmdbd (sacct works)' || echo none)"
    sinfo -N
    say "use it with: export SLURM_CONF=$CONF"
}

stop_pidfile() {  # stop_pidfile FILE: TERM, then KILL after 10 s
    local file=$1 pid
    [ -f "$file" ] || return 0
    pid=$(cat "$file")
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

stop() {
    need_root
    [ -f "$CONF" ] || { say "nothing to stop in $DIR"; return; }
    scancel --user="$(id -un)" 2>/dev/null || true
    sleep 1
    for file in "$DIR"/run/slurmd-*.pid; do stop_pidfile "$file"; done
    stop_pidfile "$DIR/run/slurmctld.pid"
    stop_pidfile "$DIR/run/slurmdbd.pid"
    stop_pidfile "$DIR/run/db.pid"
    if [ -f "$DIR/started-munged" ]; then
        stop_pidfile /run/munge/munged.pid
        rm -f "$DIR/started-munged"
    fi
    say "stopped (state and logs left in $DIR)"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) sinfo -N && squeue ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
