#!/usr/bin/env bash
# Placeholder demo: loopback in a throwaway namespace (replaced by the full demo).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release
ns=cni-demo-$$
cleanup() { ip netns del "$ns" 2>/dev/null || true; }
trap cleanup EXIT INT TERM
ip netns add "$ns"
echo "==> ADD loopback in $ns"
echo '{"cniVersion":"1.1.0","name":"demo-lo","type":"loopback"}' |
  CNI_COMMAND=ADD CNI_CONTAINERID=demo CNI_NETNS=/run/netns/$ns CNI_IFNAME=lo CNI_PATH=$PWD/$bin $bin/loopback
ip netns exec "$ns" ip -br addr show lo
echo '{"cniVersion":"1.1.0","name":"demo-lo","type":"loopback"}' |
  CNI_COMMAND=DEL CNI_CONTAINERID=demo CNI_NETNS=/run/netns/$ns CNI_IFNAME=lo CNI_PATH=$PWD/$bin $bin/loopback
echo "==> DEL done"
