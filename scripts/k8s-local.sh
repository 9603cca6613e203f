#!/usr/bin/env bash
# A real single-node Kubernetes 1.20 cluster on this machine, built from Debian's source
# package: etcd, kube-apiserver, controller-manager, scheduler, kubelet (dockershim, pods on
# docker0, no CNI) and kube-proxy (iptables) as background processes (there is no systemd).
#
#   scripts/k8s-local.sh build    compile the five binaries once (about 10 min; cached)
#   scripts/k8s-local.sh up       start the cluster, wait for the node Ready (idempotent)
#   scripts/k8s-local.sh status   what runs; exit 0 when up, 3 when down
#   scripts/k8s-local.sh down     stop everything and leave the machine as found (idempotent)
#
# Binaries: $HARNESS_K8S_CACHE (default /var/cache/harness-k8s)/<version>-<hash>/bin, the hash
# covering the Debian source version and scripts/k8s/oom-score-adj.sed.
# State: $HARNESS_K8S_STATE (default /var/lib/harness-k8s): pki/, tokens.csv, kubeconfig (the
# admin's), kubeconfigs/ (one per component), run/ (pid files), log/, sysctl.before.
#   scripts/k8s-local.sh hpa-sync 2s    the HPA controller's sync period (restarts only the
#                                       controller-manager; remembered for later `up`s)
#
# Environment: HARNESS_K8S_HPA_SYNC (else the last `hpa-sync`, else 15s)
# --horizontal-pod-autoscaler-sync-period; $STATE/hpa-sync-period says what the running one uses;
# HARNESS_K8S_SERVICE_CIDR (10.96.0.0/16); HARNESS_K8S_UP_TIMEOUT_S (120);
# HARNESS_K8S_KEEP_ON_FAILURE=1 leaves a failed `up` running for a post-mortem.
# Run it as root; the harness's convention is to hold /tmp/harness-docker.lock around it.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)

CACHE=${HARNESS_K8S_CACHE:-/var/cache/harness-k8s}
K8S_VERSION=1.20.2
# Debian's bookworm package (its upstream tree is 1.20.2 despite the 1.20.5 prefix)
DEB_SRC_VERSION=1.20.5+really1.20.2-1.1+deb12u1
PATCH_SED=$HERE/k8s/oom-score-adj.sed
# The vendored reflect2 1.0.1 crashes the apiserver under Go >= 1.18 (SIGSEGV in
# mapiterinit while it pretty-prints JSON, e.g. for curl); Debian's 1.0.2 replaces it.
REFLECT2_VERSION=1.0.2
# the cache key changes with the source version and the patches
PATCH_HASH=$({ echo "$DEB_SRC_VERSION reflect2-$REFLECT2_VERSION"; cat "$PATCH_SED"; } |
    sha256sum | cut -c1-12)
BIN=$CACHE/$K8S_VERSION-$PATCH_HASH/bin
COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
PAUSE_IMAGE=harness-k8s-pause:3.4

STATE=${HARNESS_K8S_STATE:-/var/lib/harness-k8s}
PKI=$STATE/pki
RUN=$STATE/run
LOG=$STATE/log
KUBELET_ROOT=$STATE/kubelet
# The node's name is its Hostname address, which the apiserver uses to reach the kubelet
# (logs, exec): "localhost" resolves to 127.0.0.1, the only address the kubelet listens on.
# (The kubelet refuses a loopback --node-ip, so the InternalIP is docker0's address.)
NODE=localhost
API=https://127.0.0.1:6443
SERVICE_CIDR=${HARNESS_K8S_SERVICE_CIDR:-10.96.0.0/16}
UP_TIMEOUT_S=${HARNESS_K8S_UP_TIMEOUT_S:-120}
# started in this order, stopped in the reverse one
PROCS=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
# Kernel settings kubelet and kube-proxy change when they start; saved by `up`, restored by
# `down`.
SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
    kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.conf.all.route_localnet
    net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables
    net.netfilter.nf_conntrack_max net.netfilter.nf_conntrack_tcp_timeout_established
    net.netfilter.nf_conntrack_tcp_timeout_close_wait net.netfilter.nf_conntrack_tcp_be_liberal)
# Paths kubelet or dockershim create outside the state folder whatever their flags say;
# `down` removes those that were absent before `up`.
OUTSIDE_PATHS=(/var/log/pods /var/log/containers /var/lib/kubelet /var/lib/dockershim
    /var/run/dockershim.sock /var/run/kubernetes /usr/libexec/kubernetes /etc/kubernetes)

say() { printf 'k8s-local: %s\n' "$*"; }
die() { printf 'k8s-local: ERROR: %s\n' "$*" >&2; exit 1; }

# shellcheck source-path=SCRIPTDIR source=k8s/build.sh
. "$HERE/k8s/build.sh"
# shellcheck source-path=SCRIPTDIR source=k8s/pki.sh
. "$HERE/k8s/pki.sh"

# ---------------------------------------------------------------- processes

pid_of() { # the pid of a running component, or nothing
    local f=$RUN/$1.pid pid
    [[ -f $f ]] || return 0
    pid=$(cat "$f")
    # the pid file names a process only while that process still runs our binary
    if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$1"; then
        echo "$pid"
    fi
}

start() { # start NAME BINARY ARGS...: a background process in its own session
    local name=$1
    shift
    (
        # Close every inherited descriptor: under `flock LOCK scripts/k8s-local.sh up` one of
        # them holds the machine's lock, which a daemon would keep for as long as it runs.
        for fd in "/proc/$BASHPID/fd/"*; do
            fd=${fd##*/}
            if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
        done
        # not a process group leader (no job control), so setsid keeps this pid
        exec setsid "$@" >"$LOG/$name.log" 2>&1 </dev/null
    ) &
    local pid=$! i
    echo "$pid" >"$RUN/$name.pid"
    # until the exec: pid_of recognises the process by its command line, not the subshell's
    for ((i = 0; i < 100; i++)); do
        [[ -n $(pid_of "$name") || ! -d /proc/$pid ]] && break
        sleep 0.05
    done
}

stop() { # stop NAME: SIGTERM, then SIGKILL after 15 s
    local name=$1 pid i
    pid=$(pid_of "$name")
    if [[ -n $pid ]]; then
        kill "$pid" 2>/dev/null || true
        for ((i = 0; i < 150; i++)); do
            [[ -d /proc/$pid ]] || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$RUN/$name.pid"
}

# processes of ours whose pid file is gone (an interrupted `up`): matched by the exact path of
# our binaries and of our etcd data dir, never by a bare name
strays() {
    pgrep -f "^$BIN/" || true
    pgrep -f "^/usr/bin/etcd .*--data-dir=$STATE/etcd" || true
}

fail_up() { # fail_up COMPONENT MESSAGE: the log tail, then (by default) a clean `down`
    say "ERROR: $2"
    if [[ -f $LOG/$1.log ]]; then
        # the first fatal/error lines (a Go panic's stack buries them), then the tail
        echo "---- first errors in $LOG/$1.log" >&2
        grep -m 5 -E '^[FE][0-9]{4} |rror' "$LOG/$1.log" | cut -c1-400 >&2 || true
        echo "---- last lines" >&2
        tail -n 15 "$LOG/$1.log" | cut -c1-400 >&2
        echo "----" >&2
    fi
    if [[ ${HARNESS_K8S_KEEP_ON_FAILURE:-0} != 1 ]]; then
        say "stopping what was started (HARNESS_K8S_KEEP_ON_FAILURE=1 keeps it)"
        down >&2
    fi
    exit 1
}

wait_for() { # wait_for COMPONENT WHAT COMMAND...: poll until COMMAND succeeds or the deadline
    local comp=$1 desc=$2 p
    shift 2
    until "$@" >/dev/null 2>&1; do
        for p in "${PROCS[@]}"; do # any component started so far that died is the culprit
            if [[ -f $RUN/$p.pid && -z $(pid_of "$p") ]]; then
                fail_up "$p" "$p exited while waiting for $desc"
            fi
        done
        ((SECONDS < deadline)) || fail_up "$comp" "no $desc after ${UP_TIMEOUT_S}s"
        sleep 0.5
    done
}

node_ready() {
    api "/api/v1/nodes/$NODE" | python3 -c '
import json, sys
conds = json.load(sys.stdin)["status"].get("conditions", [])
sys.exit(0 if any(c["type"] == "Ready" and c["status"] == "True" for c in conds) else 1)'
}

# ---------------------------------------------------------------- up

start_controller_manager() { # with the HPA sync period of HARNESS_K8S_HPA_SYNC or `hpa-sync`
    local sync
    sync=$(hpa_sync)
    start kube-controller-manager "$BIN/kube-controller-manager" \
        --kubeconfig="$STATE/kubeconfigs/kube-controller-manager.conf" \
        --authentication-kubeconfig="$STATE/kubeconfigs/kube-controller-manager.conf" \
        --authorization-kubeconfig="$STATE/kubeconfigs/kube-controller-manager.conf" \
        --bind-address=127.0.0.1 --port=0 --leader-elect=false \
        --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
        --use-service-account-credentials=true \
        --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
        --service-cluster-ip-range="$SERVICE_CIDR" \
        --horizontal-pod-autoscaler-sync-period="$sync"
    # what the running controller-manager uses, for the harness to state in run.json
    echo "$sync" >"$STATE/hpa-sync-period.tmp"
    mv "$STATE/hpa-sync-period.tmp" "$STATE/hpa-sync-period"
}

hpa_sync() { # the sync period to start with: the environment's, else the last `hpa-sync`
    if [[ -n ${HARNESS_K8S_HPA_SYNC:-} ]]; then
        echo "$HARNESS_K8S_HPA_SYNC"
    elif [[ -f $STATE/hpa-sync-setting ]]; then
        cat "$STATE/hpa-sync-setting"
    else
        echo 15s
    fi
}

# `hpa-sync DURATION`: the HPA controller's --horizontal-pod-autoscaler-sync-period, a
# cluster-wide setting. Remembered for later `up`s; a running controller-manager is
# restarted with it (a few seconds; nothing else stops).
set_hpa_sync() {
    [[ $(id -u) -eq 0 ]] || die "run as root"
    [[ ${1:-} =~ ^[0-9]+(ms|s|m)$ ]] || die "usage: $0 hpa-sync DURATION (e.g. 2s, 15s, 1m)"
    mkdir -p "$STATE"
    echo "$1" >"$STATE/hpa-sync-setting"
    if [[ -n $(pid_of kube-controller-manager) ]]; then
        stop kube-controller-manager
        HARNESS_K8S_HPA_SYNC=$1 start_controller_manager
        local deadline=$((SECONDS + 30))
        until [[ -n $(pid_of kube-controller-manager) ]] &&
            grep -q 'Started "horizontalpodautoscaling"' "$LOG/kube-controller-manager.log"; do
            [[ -n $(pid_of kube-controller-manager) ]] ||
                die "kube-controller-manager exited: $(tail -n 5 "$LOG/kube-controller-manager.log")"
            ((SECONDS < deadline)) || die "kube-controller-manager did not start its HPA controller in 30 s"
            sleep 0.2
        done
        say "kube-controller-manager restarted with --horizontal-pod-autoscaler-sync-period=$1"
    else
        say "the next 'up' starts the HPA controller with a sync period of $1"
    fi
}


check_service_cidr() { # the service range must not overlap a route or a Docker network
    { ip -4 route show | awk '{print $1}'
      # shellcheck disable=SC2046 # one argument per network id
      docker network inspect $(docker network ls -q) --format '{{range .IPAM.Config}}{{.Subnet}} {{end}}' | tr ' ' '\n'
    } | python3 -c '
import ipaddress, sys
svc = ipaddress.ip_network(sys.argv[1])
for line in sys.stdin:
    word = line.strip()
    if not word or word == "default":
        continue
    try:
        net = ipaddress.ip_network(word, strict=False)
    except ValueError:
        continue
    if net.version == 4 and net.overlaps(svc):
        sys.exit(f"service range {svc} overlaps {net} (set HARNESS_K8S_SERVICE_CIDR)")
' "$SERVICE_CIDR" || die "pick another HARNESS_K8S_SERVICE_CIDR"
}

ensure_pause_image() {
    docker image inspect "$PAUSE_IMAGE" >/dev/null 2>&1 && return 0
    local ctx
    ctx=$(mktemp -d)
    cp "$BIN/pause" "$ctx/pause"
    printf 'FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n' >"$ctx/Dockerfile"
    # a shared image of the cluster, not one run's: harness.k8s, not harness.managed
    docker build -q --label harness.k8s=true -t "$PAUSE_IMAGE" "$ctx" >/dev/null
    rm -rf "$ctx"
}

save_sysctls() {
    [[ -f $STATE/sysctl.before ]] && return 0 # an earlier, unfinished `up` saved them first
    local k
    for k in "${SYSCTLS[@]}"; do
        if sysctl -n "$k" >/dev/null 2>&1; then echo "$k=$(sysctl -n "$k" | tr '\t' ' ')"; fi
    done >"$STATE/sysctl.before.tmp"
    mv "$STATE/sysctl.before.tmp" "$STATE/sysctl.before"
    for k in "${OUTSIDE_PATHS[@]}"; do
        if [[ ! -e $k ]]; then echo "$k"; fi
    done >"$STATE/absent-paths"
}

all_running() {
    local p
    for p in "${PROCS[@]}"; do [[ -n $(pid_of "$p") ]] || return 1; done
}

any_running() {
    local p
    for p in "${PROCS[@]}"; do [[ -z $(pid_of "$p") ]] || return 0; done
    [[ -n $(strays) ]]
}

up() {
    [[ $(id -u) -eq 0 ]] || die "run as root"
    if all_running && node_ready; then
        say "already up: $API (kubeconfig $STATE/kubeconfig)"
        return 0
    fi
    if any_running; then
        say "partly up: stopping the rest first"
        down
    fi
    built || die "no binaries in $BIN: run '$0 build' first (about 10 min)"
    command -v etcd >/dev/null || die "no etcd: apt-get install etcd-server (or run '$0 build')"
    docker info >/dev/null 2>&1 || die "no Docker engine answers"
    local t0=$SECONDS deadline=$((SECONDS + UP_TIMEOUT_S))
    check_service_cidr
    ensure_pki
    ensure_pause_image
    save_sysctls
    local adv
    adv=$(docker0_ip)

    start etcd etcd --name=harness-k8s --data-dir="$STATE/etcd" \
        --listen-client-urls=http://127.0.0.1:2379 --advertise-client-urls=http://127.0.0.1:2379 \
        --listen-peer-urls=http://127.0.0.1:2380 --initial-advertise-peer-urls=http://127.0.0.1:2380 \
        --initial-cluster=harness-k8s=http://127.0.0.1:2380 --listen-metrics-urls=http://127.0.0.1:2381
    wait_for etcd "etcd health" curl -fsS --max-time 2 http://127.0.0.1:2379/health

    start kube-apiserver "$BIN/kube-apiserver" \
        --bind-address=127.0.0.1 --secure-port=6443 --advertise-address="$adv" \
        --etcd-servers=http://127.0.0.1:2379 --service-cluster-ip-range="$SERVICE_CIDR" \
        --service-node-port-range=30000-32767 --allow-privileged=true \
        --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
        --client-ca-file="$PKI/ca.crt" --token-auth-file="$STATE/tokens.csv" \
        --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
        --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
        --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
        --kubelet-preferred-address-types=Hostname,InternalIP \
        --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" \
        --requestheader-allowed-names=front-proxy-client \
        --requestheader-extra-headers-prefix=X-Remote-Extra- \
        --requestheader-group-headers=X-Remote-Group --requestheader-username-headers=X-Remote-User \
        --proxy-client-cert-file="$PKI/front-proxy-client.crt" \
        --proxy-client-key-file="$PKI/front-proxy-client.key" --enable-aggregator-routing=true \
        --cert-dir="$PKI/apiserver-generated"
    wait_for kube-apiserver "apiserver /readyz" api /readyz

    start_controller_manager
    start kube-scheduler "$BIN/kube-scheduler" \
        --kubeconfig="$STATE/kubeconfigs/kube-scheduler.conf" \
        --authentication-kubeconfig="$STATE/kubeconfigs/kube-scheduler.conf" \
        --authorization-kubeconfig="$STATE/kubeconfigs/kube-scheduler.conf" \
        --bind-address=127.0.0.1 --port=0 --leader-elect=false

    # Image GC off (100): the kubelet must never delete the images other work on this machine
    # uses. Eviction thresholds low: a shared disk's usage is not this node's pressure.
    start kubelet "$BIN/kubelet" \
        --kubeconfig="$STATE/kubeconfigs/kubelet.conf" --root-dir="$KUBELET_ROOT" \
        --cert-dir="$STATE/kubelet-pki" --hostname-override="$NODE" --node-ip="$adv" \
        --address=127.0.0.1 --healthz-bind-address=127.0.0.1 --read-only-port=0 \
        --anonymous-auth=false --authentication-token-webhook=true \
        --authorization-mode=Webhook --client-ca-file="$PKI/ca.crt" \
        --container-runtime=docker --cgroup-driver=cgroupfs --fail-swap-on=false \
        --pod-infra-container-image="$PAUSE_IMAGE" --oom-score-adj=0 \
        --experimental-dockershim-root-directory="$STATE/dockershim" \
        --container-runtime-endpoint="unix://$RUN/dockershim.sock" \
        --image-service-endpoint="unix://$RUN/dockershim.sock" \
        --volume-plugin-dir="$STATE/kubelet-plugins" \
        --image-gc-high-threshold=100 --image-gc-low-threshold=99 \
        --eviction-hard='memory.available<100Mi,nodefs.available<1%,imagefs.available<1%' \
        --register-node=true --v=1

    # --masquerade-all: a pod reaching a Service whose backend is a pod on the same bridge
    # gets the answer through the host, not straight over docker0 past the DNAT.
    # --conntrack-*=0: leave the host's conntrack settings as they are.
    start kube-proxy "$BIN/kube-proxy" \
        --kubeconfig="$STATE/kubeconfigs/kube-proxy.conf" --hostname-override="$NODE" \
        --proxy-mode=iptables --nodeport-addresses=127.0.0.0/8 --masquerade-all=true \
        --bind-address=127.0.0.1 --healthz-bind-address=127.0.0.1:10256 \
        --metrics-bind-address=127.0.0.1:10249 --oom-score-adj=0 \
        --conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0 \
        --conntrack-tcp-timeout-close-wait=0
    wait_for kubelet "node $NODE Ready" node_ready
    # pods are refused until the namespace's default service account exists
    wait_for kube-controller-manager "the default service account" \
        api /api/v1/namespaces/default/serviceaccounts/default
    say "up in $((SECONDS - t0)) s: $API, node $NODE Ready, kubeconfig $STATE/kubeconfig"
}

# ---------------------------------------------------------------- down

k8s_containers() { # the containers dockershim made: label io.kubernetes.pod.name, name k8s_*
    docker ps -a --filter label=io.kubernetes.pod.name --format '{{.ID}} {{.Names}}' |
        awk '$2 ~ /^k8s_/ {print $1}'
}

clean_iptables() { # delete every KUBE-* chain and every rule that jumps to one
    local tool
    for tool in iptables ip6tables; do
        command -v "$tool-save" >/dev/null || continue
        "$tool-save" 2>/dev/null | python3 -c '
import shlex, subprocess, sys
tool = sys.argv[1]
table, chains, rules = "", {}, []
for line in sys.stdin:
    line = line.rstrip("\n")
    if line.startswith("*"):
        table = line[1:]
    elif line.startswith(":KUBE-"):
        chains.setdefault(table, []).append(line[1:].split()[0])
    elif line.startswith("-A ") and "KUBE-" in line and not line.split()[1].startswith("KUBE-"):
        rules.append((table, shlex.split(line)[1:]))
for table, spec in rules:
    subprocess.run([tool, "-w", "-t", table, "-D", *spec], check=False)
for table, names in chains.items():
    for name in names:
        subprocess.run([tool, "-w", "-t", table, "-F", name], check=False)
    for name in names:
        subprocess.run([tool, "-w", "-t", table, "-X", name], check=False)
' "$tool"
    done
}

kubelet_mounts() {
    awk -v root="$KUBELET_ROOT" '$2 == root || index($2, root "/") == 1 || index($2, "/var/lib/kubelet/") == 1 {print $2}' /proc/self/mounts
}

kube_cgroups() { # the cgroups kubelet made, deepest first
    find /sys/fs/cgroup -mindepth 1 -maxdepth 3 -type d -name 'kubepods*' -prune 2>/dev/null |
        while read -r top; do find "$top" -depth -type d; done
}

down() {
    [[ $(id -u) -eq 0 ]] || die "run as root"
    local i p pid
    # the node agents first, so nothing recreates what is removed below
    for ((i = ${#PROCS[@]} - 1; i >= 0; i--)); do
        p=${PROCS[i]}
        [[ $p == etcd || $p == kube-apiserver ]] && continue
        stop "$p"
    done
    local ids
    ids=$(k8s_containers)
    if [[ -n $ids ]]; then
        # shellcheck disable=SC2086
        docker rm -f -v $ids >/dev/null
    fi
    stop kube-apiserver
    stop etcd
    for pid in $(strays); do kill -9 "$pid" 2>/dev/null || true; done
    clean_iptables
    local m
    for m in $(kubelet_mounts | sort -r); do umount "$m" 2>/dev/null || umount -l "$m"; done
    local cg
    for cg in $(kube_cgroups); do rmdir "$cg" 2>/dev/null || true; done
    if [[ -f $STATE/sysctl.before ]]; then
        local kv k v
        while IFS= read -r kv; do
            k=${kv%%=*} v=${kv#*=}
            [[ "$(sysctl -n "$k" 2>/dev/null | tr '\t' ' ')" == "$v" ]] || sysctl -q -w "$k=$v" >/dev/null
        done <"$STATE/sysctl.before"
        rm -f "$STATE/sysctl.before"
    fi
    if [[ -f $STATE/absent-paths ]]; then
        while IFS= read -r p; do rm -rf "$p"; done <"$STATE/absent-paths"
        rm -f "$STATE/absent-paths"
    fi
    # a fresh cluster on every `up`: objects of an earlier session would come back otherwise
    rm -f "$STATE/hpa-sync-period" # the running controller-manager's: none now
    rm -rf "$STATE/etcd" "$KUBELET_ROOT" "$STATE/dockershim" "$STATE/kubelet-plugins" \
        "$STATE/kubelet-pki" "$RUN"/*.sock
    local left=""
    [[ -z $(strays) ]] || left+=" processes"
    [[ -z $(k8s_containers) ]] || left+=" containers"
    [[ -z $(kubelet_mounts) ]] || left+=" mounts"
    [[ -z $(kube_cgroups) ]] || left+=" cgroups"
    [[ $(iptables-save 2>/dev/null) != *KUBE-* ]] || left+=" iptables"
    [[ -z $left ]] || die "down left:$left"
    say "down"
}

# ---------------------------------------------------------------- status

status() {
    local p pid up=1
    for p in "${PROCS[@]}"; do
        pid=$(pid_of "$p")
        if [[ -n $pid ]]; then
            printf '%-24s running  pid %-7s rss %s MB\n' "$p" "$pid" \
                "$(($(awk '/VmRSS/ {print $2}' "/proc/$pid/status") / 1024))"
        else
            printf '%-24s stopped\n' "$p"
            up=0
        fi
    done
    if ((up)) && node_ready; then
        echo "node $NODE Ready; apiserver $API; kubeconfig $STATE/kubeconfig"
        return 0
    fi
    ((up)) && echo "node $NODE not Ready"
    any_running && echo "partly up: '$0 down' cleans it"
    return 3
}

case ${1:-} in
build) build ;;
up) up ;;
down) down ;;
status) status ;;
hpa-sync) set_hpa_sync "${2:-}" ;;
*) die "usage: $0 build|up|down|status|hpa-sync DURATION" ;;
esac
