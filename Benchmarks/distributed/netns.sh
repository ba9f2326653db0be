#!/usr/bin/env bash
# Runs `train --distributed pipeline|data` over MPI ranks that each live in their own Linux
# network namespace on this one machine, so that every byte the ranks exchange crosses a real
# network stack (TCP/IP, a veth link, a bridge) instead of shared memory, and, given a RATE,
# crosses links shaped with tc to that bandwidth: a model of N machines on a switch.
#
#   Benchmarks/distributed/netns.sh up N [RATE]     namespaces sigprop-ns1..N, addresses
#                                                   10.77.0.1..N/24 on eth0, loopback up, all on
#                                                   one bridge; RATE (1gbit, 100mbit, ...)
#                                                   shapes each link in both directions
#   Benchmarks/distributed/netns.sh run N -- ARGS   mpirun in sigprop-ns1, one rank per
#                                                   namespace, running `train ARGS`
#   Benchmarks/distributed/netns.sh stats [N]       bytes and packets counted on each link
#   Benchmarks/distributed/netns.sh down            removes all of it
#
# e.g.  Benchmarks/distributed/netns.sh up 2 1gbit
#       Benchmarks/distributed/netns.sh run 2 -- --distributed data --model cnn --limit 6400
#       Benchmarks/distributed/netns.sh down
#
# Layout: the bridge br0 lives in a namespace of its own, sigprop-sw (the switch), so that
# nothing is added to the root namespace and its firewall (br_netfilter) never sees the
# traffic. Namespace sigprop-nsI has eth0 = 10.77.0.I/24, the end of a veth pair whose other
# end, pI, is a port of br0. `up` runs `down` first, so it can be repeated; `down` ends
# whatever still runs in the namespaces (a rank left behind would keep them alive).
#
# Shaping: with RATE, both ends of every veth pair get a root qdisc on egress, so each
# "machine" sends at most RATE and receives at most RATE (full duplex, as a switched
# Ethernet port). The qdisc is tbf (burst: 4 ms of RATE, at least 64 KiB; queue: 20 ms of
# RATE, at least 8 MiB, so that TCP's bursts wait instead of being dropped). It shapes
# bandwidth only: the links add no delay of their own.
#
# `run` launches mpirun inside sigprop-ns1 with hosts given as addresses (-H 10.77.0.1:1,...);
# Open MPI starts the remote daemons through an rsh agent, written to $NETNS_DIR/agent, that
# maps an address 10.77.0.I to `ip netns exec sigprop-nsI sh -c "<command>"`. The processes
# of namespace I also get a UTS namespace with hostname sigprop-nsI, so that host names (in
# Open MPI's messages, its session folders in /tmp) tell the "machines" apart. Open MPI is
# held to TCP over 10.77.0.0/24 for both its runtime (oob) and the messages (pml ob1, btl
# tcp,self: no vader shared memory, no UCX), so nothing takes a shortcut through memory. Every rank gets SIGPROP_BACKEND=cpu (unless the caller sets
# another) and every SIGPROP_* and OPENBLAS_* variable of the caller's environment.
#
# Environment:
#   TRAIN=path        the train binary (default: .build/release/train of this package)
#   MTU=bytes         MTU of the links (default 1500)
#   PIN=1             run: bind everything in namespace I to core (I-1) mod cores, so each
#                     rank stands for a machine of one core (default: no binding; mpirun's
#                     own binding is off, since every "node" would pick core 0)
#   MPIRUN_ARGS=...   run: more mpirun options, split on spaces
#   NETNS_DIR=dir     where run writes the agent and the hostfile (default /tmp/sigprop-netns)
set -euo pipefail

prefix=sigprop-ns
switch=sigprop-sw
subnet=10.77.0
package=$(cd "$(dirname "$0")/../.." && pwd)
netns_dir=${NETNS_DIR:-/tmp/sigprop-netns}

usage() {
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

die() {
    echo "netns.sh: $*" >&2
    exit 1
}

need_root() {
    [[ $(id -u) == 0 ]] || die "needs root (ip netns, tc)"
    command -v ip > /dev/null || die "ip not found: apt-get install iproute2"
}

count() {
    [[ ${1:-} =~ ^[1-9][0-9]*$ ]] || die "N must be a positive number, not '${1:-}'"
    ((${1} <= 254)) || die "at most 254 namespaces in $subnet.0/24"
}

# RATE in bytes per second, from tc's units (bit, kbit, mbit, gbit, tbit, bps, kbps, ...).
rate_bytes() {
    local rate=${1,,} number unit
    [[ $rate =~ ^([0-9]+(\.[0-9]+)?)([a-z]*)$ ]] || die "unknown RATE '$1' (e.g. 1gbit, 100mbit)"
    number=${BASH_REMATCH[1]}
    unit=${BASH_REMATCH[3]}
    local factor
    case $unit in
        bit | "") factor=0.125 ;;
        kbit) factor=125 ;;
        mbit) factor=125000 ;;
        gbit) factor=125000000 ;;
        tbit) factor=125000000000 ;;
        bps) factor=1 ;;
        kbps) factor=1000 ;;
        mbps) factor=1000000 ;;
        gbps) factor=1000000000 ;;
        kibit) factor=128 ;;
        mibit) factor=131072 ;;
        gibit) factor=134217728 ;;
        *) die "unknown RATE unit '$unit' in '$1' (e.g. 1gbit, 100mbit)" ;;
    esac
    awk -v n="$number" -v f="$factor" 'BEGIN { printf "%.0f", n * f }'
}

# shape NAMESPACE DEVICE RATE: a tbf root qdisc on the device's egress. Burst: 4 ms of RATE,
# at least 64 KiB. Queue: 20 ms of RATE, at least 8 MiB: TCP keeps up to
# tcp_limit_output_bytes (4 MiB by default) of a socket queued below it, and a shorter queue
# drops those bursts and makes TCP recover, which measures loss recovery, not bandwidth.
shape() {
    local ns=$1 dev=$2 rate=$3 bytes burst limit
    bytes=$(rate_bytes "$rate")
    burst=$((bytes / 250))
    ((burst >= 65536)) || burst=65536
    limit=$((bytes / 50))
    ((limit >= 8 << 20)) || limit=$((8 << 20))
    tc -n "$ns" qdisc replace dev "$dev" root tbf rate "$rate" burst "$burst" limit $((limit + burst))
}

namespaces() {
    ip netns list 2>/dev/null | awk '{ print $1 }' | grep -E "^($prefix[0-9]+|$switch)\$" || true
}

down() {
    need_root
    local ns pids
    for ns in $(namespaces); do
        # Whatever still runs in a namespace (a rank left behind) keeps it and its links alive.
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        if [[ -n $pids ]]; then
            kill $pids 2>/dev/null || true
            sleep 1
            pids=$(ip netns pids "$ns" 2>/dev/null || true)
            [[ -z $pids ]] || kill -9 $pids 2>/dev/null || true
        fi
        ip netns delete "$ns"
    done
    rm -rf "$netns_dir"
}

up() {
    local n=$1 rate=${2:-} i ns
    count "$n"
    [[ -z $rate ]] || rate_bytes "$rate" > /dev/null
    down
    # A failure half-way leaves nothing behind.
    trap 'echo "netns.sh: up failed, removing what it made" >&2; down' EXIT
    ip netns add "$switch"
    ip -n "$switch" link set lo up
    ip -n "$switch" link add br0 type bridge
    ip -n "$switch" link set br0 up
    for ((i = 1; i <= n; i++)); do
        ns=$prefix$i
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        ip -n "$ns" link add eth0 mtu "${MTU:-1500}" type veth peer name "p$i" netns "$switch" mtu "${MTU:-1500}"
        ip -n "$switch" link set "p$i" master br0
        ip -n "$switch" link set "p$i" up
        ip -n "$ns" addr add "$subnet.$i/24" dev eth0
        ip -n "$ns" link set eth0 up
        if [[ -n $rate ]]; then
            shape "$ns" eth0 "$rate"
            shape "$switch" "p$i" "$rate"
        fi
    done
    # Wait until every link is up and every bridge port forwards (brport state 3), so that
    # a run right after `up` does not race the links.
    local tries=0
    until ip netns exec "$switch" sh -c '
        for p in /sys/class/net/p*; do
            [ "$(cat "$p/operstate")" = up ] && [ "$(cat "$p/brport/state")" = 3 ] || exit 1
        done'; do
        ((++tries < 100)) || die "the links of $switch do not come up"
        sleep 0.1
    done
    trap - EXIT
    echo "up: $n namespaces ${prefix}1..$n at $subnet.1..$n/24 on bridge br0 in $switch${rate:+, links shaped to $rate}"
}

stats() {
    local n=${1:-} i ns
    if [[ -z $n ]]; then
        n=$(namespaces | grep -c "^$prefix" || true)
    fi
    printf '%-14s %16s %12s %16s %12s\n' link "tx bytes" "tx packets" "rx bytes" "rx packets"
    for ((i = 1; i <= n; i++)); do
        ns=$prefix$i
        ip netns exec "$ns" sh -c 'cd /sys/class/net/eth0/statistics && echo $(cat tx_bytes tx_packets rx_bytes rx_packets)' |
            while read -r txb txp rxb rxp; do
                printf '%-14s %16s %12s %16s %12s\n' "$ns/eth0" "$txb" "$txp" "$rxb" "$rxp"
            done
    done
}

write_agent() {
    local n=$1
    mkdir -p "$netns_dir"
    # Open MPI calls AGENT [options] HOST COMMAND...; the command is meant for a remote
    # shell, so it runs through sh -c, in the namespace of the address.
    cat > "$netns_dir/agent" << EOF
#!/bin/sh
while [ \$# -gt 0 ]; do
    case \$1 in -*) shift ;; *) break ;; esac
done
host=\$1
shift
case \$host in
    $subnet.*) i=\${host##*.} ;;
    $prefix*) i=\${host#$prefix} ;;
    *) echo "netns agent: unknown host \$host" >&2; exit 1 ;;
esac
ns=$prefix\$i
pin=
if [ "${PIN:-0}" = 1 ]; then
    pin="taskset -c \$(( (i - 1) % \$(nproc --all) ))"
fi
exec \$pin ip netns exec "\$ns" unshare --uts sh -c 'hostname "\$0" && exec sh -c "\$1"' "\$ns" "\$*"
EOF
    chmod +x "$netns_dir/agent"
    local i
    : > "$netns_dir/hostfile"
    for ((i = 1; i <= n; i++)); do
        echo "$subnet.$i slots=1" >> "$netns_dir/hostfile"
    done
}

run() {
    local n=$1 i
    shift
    count "$n"
    [[ ${1:-} == -- ]] && shift
    local existing
    existing=" $(namespaces | tr '\n' ' ') "
    for ((i = 1; i <= n; i++)); do
        [[ $existing == *" $prefix$i "* ]] || die "namespace $prefix$i is missing: run '$0 up $n [RATE]' first"
    done
    local train=${TRAIN:-$package/.build/release/train}
    [[ -x $train ]] || die "no train binary at $train (set TRAIN=path)"
    train=$(cd "$(dirname "$train")" && pwd)/$(basename "$train")
    write_agent "$n"
    export SIGPROP_BACKEND=${SIGPROP_BACKEND:-cpu}
    local forward=() name
    for name in $(compgen -e); do
        case $name in SIGPROP_* | OPENBLAS_*) forward+=(-x "$name") ;; esac
    done
    local mpi=(
        mpirun --allow-run-as-root --oversubscribe
        -np "$n" --hostfile "$netns_dir/hostfile" --map-by node --bind-to none
        --mca plm_rsh_agent "$netns_dir/agent"
        --mca plm_rsh_no_tree_spawn 1
        --mca pml ob1
        --mca btl tcp,self
        --mca btl_tcp_if_include "$subnet.0/24"
        --mca oob_tcp_if_include "$subnet.0/24"
        "${forward[@]}"
    )
    # shellcheck disable=SC2206
    [[ -z ${MPIRUN_ARGS:-} ]] || mpi+=($MPIRUN_ARGS)
    local pin=()
    [[ ${PIN:-0} != 1 ]] || pin=(taskset -c 0)
    # mpirun's hostname is sigprop-ns1 as the remote daemons' are sigprop-nsI.
    "${pin[@]}" ip netns exec "${prefix}1" unshare --uts sh -c 'hostname "$0" && exec "$@"' "${prefix}1" \
        "${mpi[@]}" "$train" "$@"
}

case ${1:-} in
    up)
        need_root
        [[ $# -ge 2 && $# -le 3 ]] || usage
        up "$2" "${3:-}"
        ;;
    down)
        [[ $# -eq 1 ]] || usage
        down
        ;;
    run)
        need_root
        [[ $# -ge 2 ]] || usage
        shift
        run "$@"
        ;;
    stats)
        need_root
        stats "${2:-}"
        ;;
    *) usage ;;
esac
