# Shared by .ci/slurm-up and .ci/slurm-cluster-up (sourced, not run): packages and munge.
# Both need root; both call die() defined by the sourcing script.

# install_slurm: apt-get slurm-wlm and munge unless their daemons and clients are already there.
install_slurm() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v sinfo >/dev/null; then
        return 0
    fi
    command -v apt-get >/dev/null || die "slurmctld/slurmd/munged are missing and apt-get is not available; install SLURM and munge yourself"
    echo "${0##*/}: installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed (no package mirror reachable?)"
    apt-get install -y -qq slurm-wlm munge >/dev/null || die "apt-get install slurm-wlm munge failed"
}

# start_munge: a key and the daemon (one munged serves every node of a cluster on this machine:
# its socket is a file, reachable from every network namespace).
start_munge() {
    mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
    if [ ! -s /etc/munge/munge.key ]; then
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile=/etc/munge/munge.key --force
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        fi
    fi
    chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
    chmod 0700 /etc/munge
    chmod 0400 /etc/munge/munge.key
    chmod 0755 /run/munge
    if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        runuser -u munge -- /usr/sbin/munged || die "munged failed to start; see /var/log/munge/munged.log"
        for _ in $(seq 1 20); do
            munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break
            sleep 0.5
        done
        munge -n </dev/null | unmunge >/dev/null 2>&1 || die "munged runs but a credential does not round-trip; see /var/log/munge/munged.log"
    fi
}

# machine_facts: CPUS SOCKETS CORES THREADS MEM of this machine, from `slurmd -C`.
machine_facts() {
    slurmd -C 2>/dev/null | awk '
        /^NodeName/ { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
        END { print v["CPUs"], v["SocketsPerBoard"], v["CoresPerSocket"], v["ThreadsPerCore"], v["RealMemory"] }'
}
