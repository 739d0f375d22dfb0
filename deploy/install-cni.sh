#!/bin/sh
# Installs the cni-rs plugins and a node-local conflist on a Kubernetes node.
#
# Runs in the DaemonSet pod (deploy/daemonset.yaml) with the node's
# /opt/cni/bin and /etc/cni/net.d mounted under /host, and on its own
# against any directories (tests/tests/deploy.rs does that).
#
# The conflist gets this node's pod CIDR(s): from POD_CIDRS when set
# ("10.244.3.0/24" or dual-stack "10.244.3.0/24,fd00:10:244:3::/64"),
# otherwise from spec.podCIDRs of the Node object, read from the API server
# with the pod's service account. The downward API cannot expose podCIDR,
# hence the read. The controller manager allocates these CIDRs when run with
# --allocate-node-cidrs and --cluster-cidr (kubeadm: --pod-network-cidr).
#
# Environment (defaults in brackets):
#   SRC_BIN_DIR          binaries to install [/cni/bin]
#   CONFLIST_TEMPLATE    conflist with empty host-local ranges/routes
#                        [/cni/10-cni-rs.conflist.template]
#   HOST_BIN_DIR         the node's plugin directory [/host/opt/cni/bin]
#   HOST_NET_DIR         the node's conflist directory [/host/etc/cni/net.d]
#   CONFLIST_NAME        file name in HOST_NET_DIR [10-cni-rs.conflist]
#   OVERWRITE_CONFLIST   "true" replaces an existing, different conflist [false]
#   POD_CIDRS            comma-separated CIDRs; skips the API read [unset]
#   NODE_NAME            this node (downward API spec.nodeName)
#   PODCIDR_WAIT_SECONDS how long to wait for the node to get a podCIDR [120]
#   K8S_API              API server URL [https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT]
#   SA_DIR               service account token and CA
#                        [/var/run/secrets/kubernetes.io/serviceaccount]
#   IP_MASQ              bridge ipMasq: "true" masquerades traffic leaving
#                        the node's pod CIDR (also pod-to-pod across
#                        nodes); "false" leaves outbound NAT to the
#                        cluster (e.g. ip-masq-agent) [true]
#   NODE_ROUTES          "host-gw": route every other node's pod CIDR via
#                        that node's InternalIP (nodes on one L2 network;
#                        needs CAP_NET_ADMIN, hostNetwork, RBAC list nodes);
#                        "none": the network provides those routes [none]
#   ROUTE_SYNC_SECONDS   host-gw re-sync period while sleeping [30]
#   ROUTE_PROTO          routing protocol number marking host-gw routes [201]
#   SLEEP_AFTER_INSTALL  "true" keeps running until SIGTERM (DaemonSet) [false]
set -eu

SRC_BIN_DIR=${SRC_BIN_DIR:-/cni/bin}
CONFLIST_TEMPLATE=${CONFLIST_TEMPLATE:-/cni/10-cni-rs.conflist.template}
HOST_BIN_DIR=${HOST_BIN_DIR:-/host/opt/cni/bin}
HOST_NET_DIR=${HOST_NET_DIR:-/host/etc/cni/net.d}
CONFLIST_NAME=${CONFLIST_NAME:-10-cni-rs.conflist}
OVERWRITE_CONFLIST=${OVERWRITE_CONFLIST:-false}
POD_CIDRS=${POD_CIDRS:-}
NODE_NAME=${NODE_NAME:-}
PODCIDR_WAIT_SECONDS=${PODCIDR_WAIT_SECONDS:-120}
K8S_API=${K8S_API:-https://${KUBERNETES_SERVICE_HOST:-kubernetes.default.svc}:${KUBERNETES_SERVICE_PORT:-443}}
SA_DIR=${SA_DIR:-/var/run/secrets/kubernetes.io/serviceaccount}
SLEEP_AFTER_INSTALL=${SLEEP_AFTER_INSTALL:-false}
NODE_ROUTES=${NODE_ROUTES:-none}
ROUTE_SYNC_SECONDS=${ROUTE_SYNC_SECONDS:-30}
ROUTE_PROTO=${ROUTE_PROTO:-201}
IP_MASQ=${IP_MASQ:-true}

log() { echo "install-cni: $*"; }
die() {
    echo "install-cni: error: $*" >&2
    exit 1
}

# Temp files live next to their destination so the final `mv` is a rename:
# kubelet/containerd may exec a plugin or read the conflist at any moment
# and must never see a half-written file. Removed on any exit.
TMP_FILES=""
cleanup() {
    for f in $TMP_FILES; do rm -f "$f"; done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

need() {
    command -v "$1" >/dev/null 2>&1 || die "$1 is required but not installed"
}

install_binaries() {
    [ -d "$HOST_BIN_DIR" ] || die "$HOST_BIN_DIR does not exist (is the hostPath mounted?)"
    count=0
    for src in "$SRC_BIN_DIR"/*; do
        [ -f "$src" ] && [ -x "$src" ] || continue
        name=$(basename "$src")
        dst="$HOST_BIN_DIR/$name"
        count=$((count + 1))
        if [ -f "$dst" ] && cmp -s "$src" "$dst"; then
            log "unchanged $dst"
            continue
        fi
        tmp="$HOST_BIN_DIR/.$name.install-cni.$$"
        TMP_FILES="$TMP_FILES $tmp"
        cp "$src" "$tmp" || die "copy $src to $tmp failed"
        chmod 0755 "$tmp"
        mv -f "$tmp" "$dst" || die "rename $tmp to $dst failed"
        log "installed $dst"
    done
    [ "$count" -gt 0 ] || die "no executables in $SRC_BIN_DIR"

    # A plugin that cannot run on this node (wrong architecture, missing
    # loader) must fail the install loudly, not the first pod sandbox.
    for src in "$SRC_BIN_DIR"/*; do
        [ -f "$src" ] && [ -x "$src" ] || continue
        name=$(basename "$src")
        [ "$name" = cnictl ] && continue
        out=$(CNI_COMMAND=VERSION "$HOST_BIN_DIR/$name" </dev/null 2>&1) ||
            die "$HOST_BIN_DIR/$name does not run on this node: $out"
        case $out in
        *supportedVersions*) ;;
        *) die "$HOST_BIN_DIR/$name answered VERSION with: $out" ;;
        esac
    done
}

# Prints the JSON the API server returns for a GET of path $1, with the
# pod's service-account token.
api_get() {
    [ -r "$SA_DIR/token" ] || {
        echo "install-cni: error: no service account token at $SA_DIR/token" >&2
        return 1
    }
    token=$(cat "$SA_DIR/token")
    set -- --silent --show-error --fail --max-time 10 \
        -H "Authorization: Bearer $token" -H "Accept: application/json" "$K8S_API$1"
    [ -r "$SA_DIR/ca.crt" ] && set -- --cacert "$SA_DIR/ca.crt" "$@"
    curl "$@"
}

# Prints the node's pod CIDRs, comma-separated, from the Node object.
node_pod_cidrs() {
    [ -n "$NODE_NAME" ] || die "neither POD_CIDRS nor NODE_NAME is set"
    need curl
    path="/api/v1/nodes/$NODE_NAME"
    waited=0
    while :; do
        node=$(api_get "$path") || die "read node $NODE_NAME from $K8S_API$path failed"
        cidrs=$(printf '%s' "$node" |
            jq -r '(.spec.podCIDRs // [.spec.podCIDR]) | map(select(. != null and . != "")) | join(",")') ||
            die "node $NODE_NAME: the API answer is not a Node object"
        if [ -n "$cidrs" ]; then
            printf '%s\n' "$cidrs"
            return 0
        fi
        # The controller manager assigns the CIDR shortly after the node
        # registers; this pod may start first.
        if [ "$waited" -ge "$PODCIDR_WAIT_SECONDS" ]; then
            die "node $NODE_NAME has no spec.podCIDR after ${waited}s: run the controller manager with --allocate-node-cidrs and --cluster-cidr (kubeadm init --pod-network-cidr), or set POD_CIDRS"
        fi
        log "node $NODE_NAME has no podCIDR yet, waiting" >&2
        sleep 5
        waited=$((waited + 5))
    done
}

validate_cidrs() {
    old_ifs=$IFS
    IFS=,
    set -f
    # shellcheck disable=SC2086 # split on commas on purpose
    set -- $1
    set +f
    IFS=$old_ifs
    [ $# -gt 0 ] || die "empty pod CIDR list"
    for c in "$@"; do
        is_cidr "$c" || die "not a CIDR: \"$c\""
    done
}

is_cidr() {
    printf '%s\n' "$1" |
        grep -Eq '^([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}$|^[0-9a-fA-F:]+:[0-9a-fA-F:]*/[0-9]{1,3}$'
}

is_ip() {
    printf '%s\n' "$1" | grep -Eq '^([0-9]{1,3}\.){3}[0-9]{1,3}$|^[0-9a-fA-F:]+:[0-9a-fA-F:]*$'
}

# Writes the conflist for these CIDRs: one host-local range set per CIDR
# (IPv4 and IPv6 for dual-stack) and a default route per family.
write_conflist() {
    cidrs=$1
    [ -r "$CONFLIST_TEMPLATE" ] || die "no conflist template at $CONFLIST_TEMPLATE"
    mkdir -p "$HOST_NET_DIR"
    dst="$HOST_NET_DIR/$CONFLIST_NAME"
    # The dot and the trailing ".tmp" keep runtimes, which only read
    # *.conf, *.conflist and *.json, from loading the partial file.
    tmp="$HOST_NET_DIR/.$CONFLIST_NAME.$$.tmp"
    TMP_FILES="$TMP_FILES $tmp"
    case $IP_MASQ in
    true | false) ;;
    *) die "IP_MASQ must be true or false, not \"$IP_MASQ\"" ;;
    esac
    jq --arg cidrs "$cidrs" --argjson masq "$IP_MASQ" '
        ($cidrs | split(",") | map(select(length > 0))) as $c
        | .plugins |= map(
            if .type == "bridge" then .ipMasq = $masq else . end
            | if .ipam.type? == "host-local" then
                .ipam.ranges = [$c[] | [{subnet: .}]]
                | .ipam.routes = [$c[] | if test(":") then {dst: "::/0"} else {dst: "0.0.0.0/0"} end]
            else . end)
    ' "$CONFLIST_TEMPLATE" >"$tmp" || die "render $CONFLIST_TEMPLATE failed"

    if [ -e "$dst" ]; then
        if cmp -s "$tmp" "$dst"; then
            log "unchanged $dst"
            return 0
        fi
        if [ "$OVERWRITE_CONFLIST" != true ]; then
            log "keeping existing $dst (it differs; set OVERWRITE_CONFLIST=true to replace it)"
            return 0
        fi
    fi
    chmod 0644 "$tmp"
    mv -f "$tmp" "$dst" || die "rename $tmp to $dst failed"
    log "wrote $dst for pod CIDRs $cidrs"
}

# Runtimes load the lexically first configuration in the directory.
warn_if_shadowed() {
    first=$(find "$HOST_NET_DIR" -maxdepth 1 -type f \
        \( -name '*.conf' -o -name '*.conflist' -o -name '*.json' \) |
        LC_ALL=C sort | head -n 1)
    if [ -n "$first" ] && [ "$(basename "$first")" != "$CONFLIST_NAME" ]; then
        log "warning: $(basename "$first") sorts before $CONFLIST_NAME in $HOST_NET_DIR; runtimes will use it instead"
    fi
}

# Prints "CIDR GATEWAY" for each pod CIDR of every other node, the gateway
# being that node's InternalIP of the same family.
peer_routes() {
    nodes=$(api_get /api/v1/nodes) || return 1
    printf '%s' "$nodes" | jq -r --arg self "$NODE_NAME" '
        .items[] | select(.metadata.name != $self)
        | [.status.addresses[]? | select(.type == "InternalIP") | .address] as $ips
        | (.spec.podCIDRs // [.spec.podCIDR])[]?
        | select(. != null and . != "") as $cidr
        | ($ips | map(select(test(":") == ($cidr | test(":")))) | first) as $gw
        | select($gw != null)
        | "\($cidr) \($gw)"'
}

# host-gw: make this node's routes to the other nodes' pod CIDRs match the
# Node objects. Our routes carry `proto $ROUTE_PROTO`, so stale ones can be
# found and removed without touching anybody else's. A route that cannot be
# added (the node is not on a shared network) is reported and skipped.
sync_routes() {
    routes=$(peer_routes) || {
        log "warning: listing nodes failed; routes left as they are" >&2
        return 0
    }
    wanted=" "
    while read -r cidr gw; do
        [ -n "$cidr" ] || continue
        if ! is_cidr "$cidr" || ! is_ip "$gw"; then
            log "warning: ignoring route \"$cidr via $gw\"" >&2
            continue
        fi
        case ",$POD_CIDRS," in *",$cidr,"*) continue ;; esac
        wanted="$wanted$cidr "
        current=$(ip route show exact "$cidr" proto "$ROUTE_PROTO" 2>/dev/null)
        case "$current " in *" via $gw "*) continue ;; esac
        if ip route replace "$cidr" via "$gw" proto "$ROUTE_PROTO"; then
            log "route $cidr via $gw"
        else
            log "warning: cannot route $cidr via $gw" >&2
        fi
    done <<ROUTES
$routes
ROUTES
    for family in -4 -6; do
        for dst in $(ip "$family" route show proto "$ROUTE_PROTO" | cut -d' ' -f1); do
            case $wanted in *" $dst "*) continue ;; esac
            ip "$family" route del "$dst" proto "$ROUTE_PROTO" && log "removed stale route $dst"
        done
    done
}

need jq
case $NODE_ROUTES in
none) ;;
host-gw)
    need ip
    need curl
    [ -n "$NODE_NAME" ] || die "NODE_ROUTES=host-gw needs NODE_NAME"
    ;;
*) die "NODE_ROUTES must be none or host-gw, not \"$NODE_ROUTES\"" ;;
esac
# The CIDRs first: a node without one gets nothing half-installed.
if [ -z "$POD_CIDRS" ]; then
    POD_CIDRS=$(node_pod_cidrs)
fi
validate_cidrs "$POD_CIDRS"
install_binaries
write_conflist "$POD_CIDRS"
warn_if_shadowed
[ "$NODE_ROUTES" = host-gw ] && sync_routes
log "done"

if [ "$SLEEP_AFTER_INSTALL" = true ]; then
    # Stay up so the DaemonSet pod is Running; a rollout re-runs the install.
    # The sleep runs in the background so the trap fires at once; the trap
    # ends it too, or it would outlive us holding our stdout and stderr.
    sleeper=""
    trap '[ -z "$sleeper" ] || kill "$sleeper" 2>/dev/null; exit 0' TERM INT
    period=3600
    [ "$NODE_ROUTES" = host-gw ] && period=$ROUTE_SYNC_SECONDS
    while :; do
        sleep "$period" &
        sleeper=$!
        wait "$sleeper" || true
        [ "$NODE_ROUTES" = host-gw ] && sync_routes
    done
fi
