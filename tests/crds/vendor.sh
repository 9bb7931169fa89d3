#!/usr/bin/env bash
# Vendors Tekton Pipelines' own PipelineRun and TaskRun CRDs into tests/crds/, from the module the
# end-to-end tier builds Tekton from (the version pinned by tests/e2e/tekton/go.mod), so that every
# test tier serves the same structural schemas as a real Tekton installation.
#
# The files are copied unchanged below a header naming the version and the source. The harness
# (tests/src/tekton.rs, `without_webhook`) sets their conversion to `None` when it installs them,
# as the end-to-end tier does for the whole of Tekton's config/.
#
# Prints the Tekton version it vendored.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
wrapper=$(dirname "$here")/e2e/tekton
module=github.com/tektoncd/pipeline

if ! command -v go >/dev/null 2>&1; then
  echo "error: the Go toolchain is needed to read Tekton's module; install Go and run $0 again" >&2
  exit 1
fi
info=$(cd "$wrapper" && go mod download -json "$module")
dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$info")
version=$(sed -n 's/^[[:space:]]*"Version": "\(.*\)",$/\1/p' <<<"$info")
if [[ -z $dir || -z $version || ! -d $dir/config/300-crds ]]; then
  echo "error: cannot locate $module in the module cache:" >&2
  echo "$info" >&2
  exit 1
fi
for kind in pipelinerun taskrun; do
  src=$dir/config/300-crds/300-$kind.yaml
  dst=$here/tekton.dev_${kind}s.yaml
  {
    echo "# Tekton Pipelines $version: config/300-crds/300-$kind.yaml of the Go module"
    echo "# $module@$version, copied unchanged below this header by tests/crds/vendor.sh"
    echo "# (make record-tekton). The test harness sets spec.conversion to None when it installs it"
    echo "# (tests/src/tekton.rs): there is no Tekton webhook outside the end-to-end tier."
    cat "$src"
  } >"$dst"
done
echo "$version"
