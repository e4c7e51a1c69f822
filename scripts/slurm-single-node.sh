#!/usr/bin/env bash
# A single-node Slurm on this machine, with accounting (sacct), for meow_async's Slurm tests and
# for users who want to try runner.dask: {jobqueue: slurm} on a laptop or a CI machine.
#
#   sudo scripts/slurm-single-node.sh start    # install if missing, start, wait for the node
#   sudo scripts/slurm-single-node.sh status   # sinfo, and whether sacct answers
#   sudo scripts/slurm-single-node.sh stop     # stop what start started
#
# What runs (all as root except munged, all on 127.0.0.1, state under $MEOW_SLURM_DIR,
# /tmp/meow-slurm by default): munged (reused if one answers already), a MariaDB server
# (port 16820) holding slurmdbd's accounting tables, slurmdbd (16819), slurmctld (16817) and
# slurmd (16818), with one node named after this host offering its CPUs. Debian/Ubuntu:
# apt-get installs slurmctld, slurmd, slurm-client, slurmdbd, munge and mariadb-server when
# they are missing. MEOW_SLURM_ACCOUNTING=0 skips MariaDB and slurmdbd (no sacct; finished
# jobs are then in $MEOW_SLURM_DIR/log/jobcomp.log).
set -euo pipefail

DIR=${MEOW_SLURM_DIR:-/tmp/meow-slurm}
ACCOUNTING=${MEOW_SLURM_ACCOUNTING:-1}
HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2))
CONF=$DIR/etc/slurm.conf

say() { printf 'slurm-single-node: %s\n' "$*" >&2; }

need_root() {
  if [ "$(id -u)" != 0 ]; then
    say "run as root (slurmd and slurmctld run as root here)"
    exit 2
  fi
}

install() {
  local pkgs=(slurmctld slurmd slurm-client munge)
  [ "$ACCOUNTING" = 1 ] && pkgs+=(slurmdbd mariadb-server)
  local missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} = 0 ] && return 0
  command -v apt-get >/dev/null || { say "missing ${missing[*]} and no apt-get"; exit 2; }
  say "installing ${missing[*]}"
  apt-get update -qq
  # policy-rc.d keeps the packages from starting their own daemons with their own configs.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

wait_for() {  # wait_for SECONDS WHAT COMMAND... (gives up at once if $WATCH_PID died)
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ] || { [ -n "${WATCH_PID:-}" ] && ! kill -0 "$WATCH_PID" 2>/dev/null; }; then
      say "$what did not come up; its log is under $DIR/log"
      return 1
    fi
    sleep 0.2
  done
}

start_munge() {
  if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    return 0  # a munged answers already (e.g. the system's)
  fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
  [ -s /etc/munge/munge.key ] || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
  chmod 0700 /etc/munge /var/log/munge /var/lib/munge
  chmod 0400 /etc/munge/munge.key
  runuser -u munge -- munged
  touch "$DIR/run/munged.ours"
  wait_for 10 munged sh -c 'munge -n </dev/null | unmunge'
}

start_mariadb() {
  local data=$DIR/mysql
  if [ ! -d "$data/mysql" ]; then
    mkdir -p "$data"
    mariadb-install-db --user=root --datadir="$data" --auth-root-authentication-method=socket \
      --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1
  fi
  mariadbd --user=root --datadir="$data" --socket="$DIR/run/mysqld.sock" \
    --pid-file="$DIR/run/mariadbd.pid" --bind-address=127.0.0.1 --port=16820 \
    --skip-name-resolve --innodb-buffer-pool-size=32M --innodb-log-file-size=8M \
    --log-error="$DIR/log/mariadb.log" &
  echo $! >"$DIR/run/mysqld.pid"
  WATCH_PID=$! wait_for 60 MariaDB mariadb --socket="$DIR/run/mysqld.sock" -e 'select 1'
  mariadb --socket="$DIR/run/mysqld.sock" <<SQL
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'meow-slurm';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL
}

write_configs() {
  mkdir -p "$DIR/etc"
  local acct="AccountingStorageType=accounting_storage/none"
  if [ "$ACCOUNTING" = 1 ]; then
    acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=16819"
    cat >"$DIR/etc/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdPort=16819
SlurmUser=root
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=16820
StorageUser=slurm
StoragePass=meow-slurm
StorageLoc=slurm_acct_db
CONF
    chmod 600 "$DIR/etc/slurmdbd.conf"
  fi
  cat >"$CONF" <<CONF
ClusterName=meowtest
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MessageTimeout=5
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.log
JobAcctGatherType=jobacct_gather/none
$acct
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
}

start() {
  need_root
  if [ -s "$DIR/run/slurmctld.pid" ] && kill -0 "$(cat "$DIR/run/slurmctld.pid")" 2>/dev/null; then
    say "already running (SLURM_CONF=$CONF)"
    return 0
  fi
  install
  mkdir -p "$DIR"/{state,spool,run,log}
  start_munge
  write_configs
  export SLURM_CONF=$CONF
  if [ "$ACCOUNTING" = 1 ]; then
    start_mariadb
    slurmdbd -D >>"$DIR/log/slurmdbd.out" 2>&1 &
    echo $! >"$DIR/run/slurmdbd.pid"
    wait_for 30 slurmdbd sacctmgr -n list cluster
  fi
  slurmctld -D -i >>"$DIR/log/slurmctld.out" 2>&1 &
  slurmd -D >>"$DIR/log/slurmd.out" 2>&1 &
  wait_for 30 "the node" sh -c "sinfo -h -N -o %t | grep -Eq '^(idle|mix|alloc)'"
  if [ "$ACCOUNTING" = 1 ]; then
    wait_for 30 "the cluster in accounting" sh -c "sacctmgr -n -P list cluster format=cluster | grep -qx meowtest"
  fi
  say "up: SLURM_CONF=$CONF ($(sinfo -h -o '%P %D %t %c CPUs'))"
}

stop_pid() {  # stop_pid FILE: TERM, then KILL after 10 s
  local file=$1 pid
  [ -s "$file" ] || return 0
  pid=$(cat "$file")
  kill "$pid" 2>/dev/null || { rm -f "$file"; return 0; }
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$file"
}

stop() {
  need_root
  export SLURM_CONF=$CONF
  [ -f "$CONF" ] && scancel --user=root 2>/dev/null || true  # every job of this test cluster
  stop_pid "$DIR/run/slurmd.pid"
  stop_pid "$DIR/run/slurmctld.pid"
  stop_pid "$DIR/run/slurmdbd.pid"
  stop_pid "$DIR/run/mysqld.pid"
  if [ -f "$DIR/run/munged.ours" ]; then
    stop_pid /run/munge/munged.pid
    rm -f "$DIR/run/munged.ours"
  fi
  say "stopped"
}

status() {
  export SLURM_CONF=$CONF
  sinfo
  if [ "$ACCOUNTING" = 1 ]; then
    sacct -a -X -n -S now-1hour -o JobID,JobName,State | tail -5 || true
  fi
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
