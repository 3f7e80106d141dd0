#!/usr/bin/env bash
# Builds the test control plane from Go modules into a cache directory:
#   etcd, kube-apiserver, kube-controller-manager, kubectl, helm
# for the Kubernetes version k8s-openapi is pinned to (feature v1_37).
#
# Idempotent: when every binary is present and reports the expected version
# it exits at once. Prints the bin directory on stdout (last line).
#
#   REVERIE_K8S_CACHE   cache root (default: ${XDG_CACHE_HOME:-~/.cache}/reverie)
#
# Needs: go (1.26+). Takes ~8 minutes cold on 2 cores, well under a second warm.
set -euo pipefail

K8S_VERSION="${REVERIE_K8S_VERSION:-v1.37.2}"
ETCD_VERSION="${REVERIE_ETCD_VERSION:-v3.7.3}"
HELM_VERSION="${REVERIE_HELM_VERSION:-v3.22.0}"

CACHE="${REVERIE_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/reverie}"
BIN="$CACHE/k8s-$K8S_VERSION/bin"
WORK="$CACHE/k8s-$K8S_VERSION/work"
mkdir -p "$BIN" "$WORK"

log() { echo "control-plane: $*" >&2; }

# Warm path without the lock or running any binary (each is ~100 MB; loading five of
# them takes seconds on a loaded machine): the stamp is written last, after the
# versions were checked, and removed before any rebuild.
STAMP="$BIN/.versions"
want_stamp="kubernetes=$K8S_VERSION etcd=$ETCD_VERSION helm=$HELM_VERSION"
all_present() {
  for b in etcd kube-apiserver kube-controller-manager kubectl helm; do
    [ -x "$BIN/$b" ] || return 1
  done
}
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want_stamp" ] && all_present; then
  echo "$BIN"
  exit 0
fi

# One builder at a time (parallel test binaries all call this script).
exec 9>"$CACHE/.lock"
if command -v flock >/dev/null; then flock 9; fi

k8s_minor="${K8S_VERSION#v1.}"; k8s_minor="${k8s_minor%%.*}"
staging_version="v0.${K8S_VERSION#v1.}"

have() {
  local b="$BIN/$1" out; shift
  [ -x "$b" ] || return 1
  # Captured first: with pipefail, `grep -q` closing the pipe early makes the
  # binary die of SIGPIPE and the check fail (which triggered needless rebuilds).
  out="$("$b" "$@" 2>/dev/null)" || return 1
  grep -q -- "$VERSION_WANT" <<<"$out"
}

need_k8s=0
VERSION_WANT="$K8S_VERSION"
have kube-apiserver --version || need_k8s=1
have kube-controller-manager --version || need_k8s=1
have kubectl version --client || need_k8s=1
need_etcd=0
VERSION_WANT="${ETCD_VERSION#v}"
have etcd --version || need_etcd=1
need_helm=0
VERSION_WANT="$HELM_VERSION"
have helm version --short || need_helm=1

if [ "$need_k8s$need_etcd$need_helm" = "000" ]; then
  echo "$want_stamp" > "$STAMP"
  echo "$BIN"
  exit 0
fi
rm -f "$STAMP"

command -v go >/dev/null || { log "go is required to build the control plane"; exit 1; }
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0

if [ "$need_k8s" = 1 ]; then
  log "building kube-apiserver, kube-controller-manager, kubectl $K8S_VERSION (several minutes, once)"
  d="$WORK/kubernetes"
  rm -rf "$d"; mkdir -p "$d"; cd "$d"
  gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
  [ -f "$gomod" ] || { log "could not download k8s.io/kubernetes@$K8S_VERSION"; exit 1; }
  gover="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod" | head -1)"
  cat > go.mod <<EOF
module reverie.dev/controlplane

go $gover

require k8s.io/kubernetes $K8S_VERSION
EOF
  # Exactly the modules kubernetes replaces with its ./staging tree.
  grep -E '^[[:space:]]*k8s\.io/[^ ]+ => \./staging/' "$gomod" | awk '{print $1}' | sort -u | while read -r m; do
    echo "replace $m => $m $staging_version" >> go.mod
  done
  cat > tools.go <<'EOF'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
EOF
  go mod tidy -e >/dev/null 2>&1 || true
  ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$k8s_minor -X $p.gitTreeState=clean"
  done
  go build -ldflags "$ld" -o "$BIN/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kubectl
fi

if [ "$need_etcd" = 1 ] || [ "$need_helm" = 1 ]; then
  log "building etcd $ETCD_VERSION and helm $HELM_VERSION"
  d="$WORK/tools"
  rm -rf "$d"; mkdir -p "$d"; cd "$d"
  cat > go.mod <<EOF
module reverie.dev/tools

go 1.26
EOF
  cat > tools.go <<'EOF'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "helm.sh/helm/v3/cmd/helm"
)
EOF
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" "helm.sh/helm/v3@$HELM_VERSION" >/dev/null 2>&1
  go mod tidy -e >/dev/null 2>&1 || true
  go build -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3
  go build -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" -o "$BIN/helm" helm.sh/helm/v3/cmd/helm
fi

VERSION_WANT="$K8S_VERSION"
have kube-apiserver --version || { log "kube-apiserver does not report $K8S_VERSION"; exit 1; }
VERSION_WANT="$HELM_VERSION"
have helm version --short || { log "helm does not report $HELM_VERSION"; exit 1; }
VERSION_WANT="${ETCD_VERSION#v}"
have etcd --version || { log "etcd does not report $ETCD_VERSION"; exit 1; }
echo "$want_stamp" > "$STAMP"
log "ready in $BIN"
echo "$BIN"
