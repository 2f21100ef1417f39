#!/bin/sh
# Run every benchmark of odmrd against a base build, and print the tables.
#
#   odmrd/examples/bench.sh [BASE_COMMIT]     (default 0afa6f7; run as root)
#
# - builds BASE_COMMIT in a temporary git worktree (/tmp/odmrd-base) and this tree, both release;
# - installs tcpdump from Debian if it is missing (the fetchmail timeline needs it);
# - bench_customers: fetchmail, 50 ms RTT, 100 MB BSMTP, 453 sessions (inetd and standalone);
# - the quickack route experiment, in a network namespace of its own: fetchmail's customer MTA
#   on 127.0.0.1, odmrd on 10.99.0.1 (also on lo), once as is and once with `quickack 1` on the
#   route to 127.0.0.1 only, i.e. only between fetchmail and its MTA.
set -eu
base_commit=${1:-0afa6f7}
top=$(git rev-parse --show-toplevel)
base=/tmp/odmrd-base

command -v tcpdump >/dev/null || { apt-get update && apt-get install -y tcpdump; }
[ -d "$base" ] || git -C "$top" worktree add --detach "$base" "$base_commit"
(cd "$base" && cargo build --release -p odmrd --bin odmrd)
(cd "$top" && cargo build --release -p odmrd --bin odmrd --example bench_customers --example bench_reversed --example floor_453)

bench=$top/target/release/examples/bench_customers
"$top/target/release/examples/bench_reversed"
"$bench" --base "$base/target/release/odmrd"

ns=odmrd-bench-$$
ip netns add "$ns"
trap 'ip netns delete "$ns"' EXIT
in_ns() { ip netns exec "$ns" "$@"; }
in_ns ip link set lo up
in_ns ip addr add 10.99.0.1/32 dev lo
echo "fetchmail in a namespace, default routes:"
in_ns "$bench" --only fetchmail --host 10.99.0.1 --base "$base/target/release/odmrd"
in_ns ip route change table local local 127.0.0.1 dev lo proto kernel scope host src 127.0.0.1 quickack 1
echo "the same with 'quickack 1' on the route to the MTA (127.0.0.1):"
in_ns "$bench" --only fetchmail --host 10.99.0.1 --base "$base/target/release/odmrd"
