#!/usr/bin/env bash
# Builds the lab's control-plane binaries from the Go module proxy and caches them by version
# outside the repository, so that only the first run on a machine pays for the builds.
# Prints the bin directory on stdout; progress goes to stderr.
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
CACHE=${SISKIN_CACHE:-$HOME/.cache/siskin}
BIN=$CACHE/bin/kube-$KUBE_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION
export GOFLAGS="${GOFLAGS:-} -buildvcs=false" CGO_ENABLED=0 GOTOOLCHAIN=local

say() { printf 'lab-build: %s\n' "$*" >&2; }
mkdir -p "$BIN"
lock=$CACHE/build.lock
exec 9>"$lock"
flock 9   # two labs started at once on a cold machine must not build twice

build_etcd() {
  [ -x "$BIN/etcd" ] && return
  say "building etcd $ETCD_VERSION (about 30 s, once)"
  local w; w=$(mktemp -d)
  (cd "$w" && cat > go.mod <<MOD
module siskin.lab/etcd
go 1.24
MOD
   go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2 &&
   go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3 >&2)
  mv "$BIN/etcd.tmp" "$BIN/etcd"; rm -rf "$w"
}

build_kube() {
  [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ] && [ -x "$BIN/kube-scheduler" ] && return
  say "building kube-apiserver, kube-controller-manager, kube-scheduler $KUBE_VERSION (about 5 min, once)"
  local w staging gomod
  w=$(mktemp -d)
  staging="v0${KUBE_VERSION#v1}"
  gomod=$(cd "$w" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    echo "module siskin.lab/kube"
    echo "go 1.24"
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo "replace ("
    sed -n '/^replace (/,/^)/p' "$gomod" | awk '/=>/ {print "\t" $1 " => " $1 " '"$staging"'"}'
    echo ")"
  } > "$w/go.mod"
  (cd "$w" &&
   go get "k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION" "k8s.io/kubernetes/cmd/kube-controller-manager@$KUBE_VERSION" "k8s.io/kubernetes/cmd/kube-scheduler@$KUBE_VERSION" >&2 &&
   local ld="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2)"
   mkdir -p out &&
   go build -trimpath -ldflags "$ld" -o out/ k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler >&2 &&
   mv out/* "$BIN/")
  rm -rf "$w"
}

build_kwok() {
  [ -x "$BIN/kwok" ] && [ -f "$BIN/kwok-stages.yaml" ] && return
  say "building kwok $KWOK_VERSION (about 3 min, once)"
  GOBIN="$BIN" go install "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" >&2
  local dir; dir=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  {
    cat "$dir/kustomize/stage/node/fast/node-initialize.yaml"
    for f in "$dir"/kustomize/stage/node/heartbeat/*.yaml "$dir"/kustomize/stage/pod/fast/pod-ready.yaml \
             "$dir"/kustomize/stage/pod/fast/pod-complete.yaml "$dir"/kustomize/stage/pod/fast/pod-delete.yaml; do
      echo "---"; cat "$f"
    done
  } > "$BIN/kwok-stages.yaml"
}

start=$(date +%s)
build_etcd
build_kube
build_kwok
took=$(( $(date +%s) - start ))
[ "$took" -gt 2 ] && say "built in ${took}s; cached in $BIN"
echo "$BIN"
