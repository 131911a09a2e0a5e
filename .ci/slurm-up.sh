#!/usr/bin/env bash
# A single-node Slurm cluster for the integration test (tests/test_slurm.py): slurmctld + slurmd on this machine,
# select/cons_tres, and a `gpu` GRES of fake devices backed by character devices (there is no real GPU: jobs that
# ask for one get it from Slurm and still run on the CPU).
#
#   .ci/slurm-up.sh            install slurm-wlm + munge when missing (needs root and apt), start the cluster
#   .ci/slurm-up.sh --check    exit 0 when a cluster with a free gpu GRES answers, 1 otherwise
#   .ci/slurm-up.sh --down     stop the daemons this script started
#
# The node's size: $SFTLAB_SLURM_GPUS fake GPUs (default 2) and $SFTLAB_SLURM_CPUS CPUs (default: the machine's). More
# CPUs than the machine has oversubscribes it: .ci/run declares twice its cores, so that a job holding CPUs it does not
# keep busy (Snakemake's start-up before a two-process training, a judge waiting on its server) leaves them to another
# job — the rehearsal's jobs are short and CPU-bound, and on 2 cores a 1:1 node idles a third of the time.
#
# Idempotent: a cluster that is already up with GPUs is left alone (whatever its size: --down first to resize). Run as root (Debian's Slurm 22.05 runs its
# daemons as root here; SlurmUser=root). State, logs and pid files live in $SFTLAB_SLURM_DIR.
set -euo pipefail

STATE=${SFTLAB_SLURM_DIR:-/var/tmp/sftlab-slurm}
HOST=$(hostname)
PARTITION=${SFTLAB_SLURM_PARTITION:-debug}
DEV=/dev/fake_nvidia
GPUS=${SFTLAB_SLURM_GPUS:-2}
CPUS=${SFTLAB_SLURM_CPUS:-$(nproc)}

cluster_ok() {
    # the node answers, is usable and carries the gpu GRES
    command -v sinfo >/dev/null 2>&1 || return 1
    scontrol ping 2>/dev/null | grep -q "is UP" || return 1
    sinfo -h -N -n "$HOST" -o "%G %T" 2>/dev/null | grep -Eq "gpu:[1-9][0-9]* (idle|mixed|allocated)"
}

stop_daemons() {
    for name in slurmd slurmctld; do
        if [[ -f $STATE/$name.pid ]]; then
            pid=$(cat "$STATE/$name.pid")
            if kill -0 "$pid" 2>/dev/null; then
                kill "$pid"
                for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            fi
            rm -f "$STATE/$name.pid"
        fi
    done
}

case "${1:-}" in
    --check) cluster_ok; exit ;;
    --down) stop_daemons; exit 0 ;;
    "") ;;
    *) echo "usage: $0 [--check|--down]" >&2; exit 2 ;;
esac

if cluster_ok; then
    echo "slurm: already up on $HOST"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "slurm-up: needs root (it writes /etc/slurm and starts the daemons)" >&2
    exit 1
fi

if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >/dev/null
fi

# munge: a key (the package may have made one), then the daemon as user munge
if [[ ! -s /etc/munge/munge.key ]]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged --force
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi

# the daemons find each other by this machine's name
getent hosts "$HOST" >/dev/null || echo "127.0.0.1 $HOST" >> /etc/hosts

# the GPU devices: Slurm rejects regular files in gres.conf, character devices (like /dev/null) pass
for i in $(seq 0 $((GPUS - 1))); do
    [[ -c $DEV$i ]] || { rm -f "$DEV$i"; mknod "$DEV$i" c 1 3; }
done

stop_daemons
mkdir -p "$STATE"/{state,spool,log} /etc/slurm
MEM_MB=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))

cat > /etc/slurm/slurm.conf <<EOF
# written by .ci/slurm-up.sh: a single-node test cluster
ClusterName=sftlab
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
# finished jobs stay visible to squeue / scontrol for an hour (status checks, and the test reads their GRES)
MinJobAge=3600
GresTypes=gpu
# a node described larger than the machine (CPUs above nproc) is taken as described
SlurmdParameters=config_overrides
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:$GPUS State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
cat > /etc/slurm/gres.conf <<EOF
NodeName=$HOST Name=gpu File=$DEV[0-$((GPUS - 1))]
EOF

# -c: start without the job state of an earlier run (GresTypes changes need a fresh slurmctld anyway)
slurmctld -c
slurmd
for _ in $(seq 60); do
    cluster_ok && break
    # a node that came back after an unclean stop may be marked down; it is ours to resume
    sinfo -h -N -n "$HOST" -o "%T" 2>/dev/null | grep -Eq "down|drain" &&
        scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true
    sleep 1
done
if ! cluster_ok; then
    echo "slurm-up: the cluster did not come up; logs in $STATE/log" >&2
    tail -n 20 "$STATE"/log/*.log >&2 || true
    exit 1
fi
sinfo -N -o "%N %c %m %G %T"
