#!/usr/bin/env bash
# A private single-node Slurm (munged, slurmctld, slurmd) under one directory, for the
# tests and for users who want to try optx on a cluster: nothing in /etc, /run or /var,
# no systemd, no database; `rm -rf DIR` after `down` is a full reset.
#
#   scripts/slurm-local.sh up DIR     start it; prints "export SLURM_CONF=DIR/etc/slurm.conf"
#   scripts/slurm-local.sh down DIR   cancel its jobs and stop its daemons (idempotent)
#
# Knobs: SLURM_LOCAL_CPUS (default 2), SLURM_LOCAL_MIN_JOB_AGE (default 300; how long the
# controller remembers a finished job), SLURM_LOCAL_CTLD_PORT / SLURM_LOCAL_SLURMD_PORT
# (default: free loopback ports). Installs Debian's slurmctld, slurmd, slurm-client and
# munge if they are missing (as root). The daemons run as root: so do CI and the
# development machines.
set -euo pipefail
cmd=${1:?usage: slurm-local.sh up|down DIR}
D=${2:?usage: slurm-local.sh up|down DIR}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

up() {
  if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
      echo "slurm-local.sh: Slurm is not installed: apt-get install slurmctld slurmd slurm-client munge (as root)" >&2
      exit 1
    fi
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      slurmctld slurmd slurm-client munge >/dev/null
  fi
  mkdir -p "$D"
  D=$(cd "$D" && pwd)
  CTLD_PORT=${SLURM_LOCAL_CTLD_PORT:-$(free_port)}
  SLURMD_PORT=${SLURM_LOCAL_SLURMD_PORT:-$(free_port)}
CPUS=${SLURM_LOCAL_CPUS:-2}
MIN_JOB_AGE=${SLURM_LOCAL_MIN_JOB_AGE:-300}

mkdir -p "$D"/{etc,munge-key,munge-run,state,spool,log,jobs}
chmod 755 "$D" "$D/munge-run"      # munged: socket dir must be 755 (x for all)
chmod 700 "$D/munge-key"           # munged: key dir/file must not be group/other readable
[ -s "$D/munge-key/munge.key" ] || mungekey --create --keyfile="$D/munge-key/munge.key"
chmod 400 "$D/munge-key/munge.key"

munged --key-file="$D/munge-key/munge.key" \
       --socket="$D/munge-run/munge.socket" \
       --pid-file="$D/munge-run/munged.pid" \
       --seed-file="$D/munge-key/munged.seed" \
       --log-file="$D/log/munged.log" \
       --origin=127.0.0.1

cat > "$D/etc/slurm.conf" <<CONF
ClusterName=optxtest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$D/munge-run/munge.socket
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$D/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
Epilog=/bin/true
MpiDefault=none
MailProg=/bin/true
MessageTimeout=5
ReturnToService=2
EnforcePartLimits=ALL
MinJobAge=$MIN_JOB_AGE
SlurmdParameters=config_overrides
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS Sockets=1 CoresPerSocket=$CPUS ThreadsPerCore=1 RealMemory=1024 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$D/etc/slurm.conf"

slurmctld -c        # daemonizes; -c = ignore any saved state
slurmd -N localhost # daemonizes; -N = use NodeName=localhost whatever hostname is

fail() { echo "slurm-local: $*; logs in $D/log" >&2; sinfo -N -l >&2 || true; exit 1; }
# 1. wait (max 20 s) until slurmd registered and the node is idle
for i in $(seq 1 200); do
  [ "$(sinfo -h -n localhost -o %t 2>/dev/null)" = "idle" ] && break
  [ "$i" = 200 ] && fail "node did not become idle"
  sleep 0.1
done
# 2. smoke job (max 20 s): proves munge creds, launch and completion end to end, and
#    absorbs the ~2-3 s before slurmctld's first scheduling pass after a start
J=$(sbatch --parsable --output=/dev/null --job-name=slurm-local-smoke --wrap true) || fail "smoke sbatch failed"
for i in $(seq 1 200); do
  S=$(squeue -h -t all -j "$J" -o %T 2>/dev/null)
  [ "$S" = COMPLETED ] && break
  case "$S" in FAILED|CANCELLED|TIMEOUT|NODE_FAIL) fail "smoke job $J ended $S";; esac
  [ "$i" = 200 ] && fail "smoke job $J not done (state '$S')"
  sleep 0.1
done
echo "export SLURM_CONF=$SLURM_CONF"

}

down() {
  [ -d "$D" ] || return 0
  set +e
  export SLURM_CONF="$D/etc/slurm.conf"

# alive PIDFILE NAME: the pid in PIDFILE is a live (non-zombie) process called NAME.
# (kill -0 succeeds on zombies, and PID 1 on this kind of machine reaps late; the name check
#  guards against a stale pid file whose number now belongs to something else.)
alive() {
  local p st comm
  p=$(cat "$1" 2>/dev/null) && [ -n "$p" ] || return 1   # daemons delete their pid file on exit
  st=$(ps -o stat= -p "$p" 2>/dev/null) || return 1
  comm=$(ps -o comm= -p "$p" 2>/dev/null) || return 1
  case $st in Z*) return 1;; esac
  [ "$comm" = "$2" ]
}
stop() {  # stop PIDFILE NAME: TERM, wait up to 10 s, then KILL
  alive "$1" "$2" || return 0
  local p; p=$(cat "$1" 2>/dev/null) || return 0
  kill -TERM "$p" 2>/dev/null || return 0
  for _ in $(seq 1 100); do alive "$1" "$2" || return 0; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
}

# 1. cancel all jobs so that no slurmstepd/job process outlives slurmd (killing slurmd alone
#    leaves running jobs behind); wait up to 5 s for them to finish
if alive "$D/slurmctld.pid" slurmctld; then
  scancel --partition=debug 2>/dev/null || true
  for _ in $(seq 1 50); do
    out=$(squeue -h -t R,CG,PD -o %i 2>/dev/null) || break
    [ -z "$out" ] && break
    sleep 0.1
  done
fi
# 2. daemons, node first
stop "$D/slurmd.pid" slurmd
stop "$D/slurmctld.pid" slurmctld
stop "$D/munge-run/munged.pid" munged

}

case "$cmd" in
  up) up ;;
  down) down ;;
  *) echo "slurm-local.sh: unknown command $cmd (up, down)" >&2; exit 2 ;;
esac
