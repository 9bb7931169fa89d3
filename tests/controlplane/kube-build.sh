# Sourced by tests/controlplane/install.sh and tests/e2e/install.sh: builds one command of
# k8s.io/kubernetes from the committed wrapper module (tests/controlplane/kubernetes), with the
# version stamped in the way the release build does, so `--version` and `/version` say $KUBE_VERSION.
#
#   kube_build <command> <output file>     e.g. kube_build kube-scheduler "$out/kube-scheduler"
#
# Needs KUBE_VERSION; the caller exports GOFLAGS/CGO_ENABLED.
kube_build() {
  local cmd=$1 dest=$2
  local wrapper
  wrapper=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/kubernetes
  local minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  local date; date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local ld="" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  (cd "$wrapper" && go build -mod=readonly -trimpath -ldflags "-s -w $ld" \
    -o "$dest.tmp" "k8s.io/kubernetes/cmd/$cmd")
  mv "$dest.tmp" "$dest"
}
