#!/usr/bin/env bash
# Builds Flagger (github.com/fluxcd/flagger, Apache-2.0) from the Go module proxy for the
# scale benchmark and caches the binary by version outside the repository, like
# test/lab/build.sh does for the control plane. The one change to Flagger's source: its HTTP
# server (/metrics, /healthz) listens on 127.0.0.1 instead of every interface.
# Prints the binary's path on stdout; progress goes to stderr.
set -euo pipefail

FLAGGER_VERSION=${FLAGGER_VERSION:-v1.36.1}
CACHE=${SISKIN_CACHE:-$HOME/.cache/siskin}
OUT=$CACHE/bin/flagger-$FLAGGER_VERSION
export GOFLAGS="-buildvcs=false -mod=mod" CGO_ENABLED=0 GOTOOLCHAIN=local

say() { printf 'bench-build: %s\n' "$*" >&2; }
mkdir -p "$CACHE/bin"
exec 9>"$CACHE/build-flagger.lock"
flock 9

if [ ! -x "$OUT" ]; then
  say "building flagger $FLAGGER_VERSION from the Go module proxy (a few minutes, once)"
  start=$(date +%s)
  dir=$(go mod download -json "github.com/fluxcd/flagger@$FLAGGER_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  if [ -z "$dir" ]; then
    say "the Go module proxy did not serve github.com/fluxcd/flagger@$FLAGGER_VERSION"
    exit 1
  fi
  w=$(mktemp -d)
  trap 'chmod -R u+w "$w"; rm -rf "$w"' EXIT
  cp -r "$dir/." "$w/"
  chmod -R u+w "$w"
  # The listen-address patch: Addr ":" + port becomes "127.0.0.1:" + port.
  srv="$w/pkg/server/server.go"
  grep -q 'Addr:         ":" + port,' "$srv" || { say "unexpected $srv: the listen-address patch does not apply"; exit 1; }
  sed -i 's|Addr:         ":" + port,|Addr:         "127.0.0.1:" + port,|' "$srv"
  (cd "$w" && go build -trimpath -ldflags "-s -w" -o "$OUT.tmp" ./cmd/flagger >&2)
  mv "$OUT.tmp" "$OUT"
  say "built in $(( $(date +%s) - start ))s; cached at $OUT"
fi
echo "$OUT"
