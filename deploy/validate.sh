#!/usr/bin/env bash
# Validates deploy/kubernetes/*.yaml offline against the Kubernetes API
# schemas bundled with the `kubernetes-validate` Python package (strict:
# unknown fields are errors). Installs the package with pip when it is
# missing. Idempotent; run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Kubernetes version the manifests target (schemas ship with the
# package, so no network is needed once it is installed).
K8S_VERSION=1.30.0

if ! command -v kubernetes-validate >/dev/null 2>&1; then
  echo "== installing kubernetes-validate (pip)"
  pip_log=$(mktemp)
  if command -v pip3 >/dev/null 2>&1; then pip=pip3; else pip=pip; fi
  if ! command -v "$pip" >/dev/null 2>&1; then
    echo "pip is missing: installing python3-pip with apt-get" >&2
    deploy/apt-install.sh "the manifest check needs pip" python3-pip
    pip=pip3
  fi
  # Debian's system Python refuses global installs (PEP 668) unless told.
  if ! "$pip" install -q kubernetes-validate >"$pip_log" 2>&1 \
    && ! "$pip" install -q --break-system-packages kubernetes-validate >"$pip_log" 2>&1; then
    cat "$pip_log" >&2
    echo "cannot install kubernetes-validate with $pip" >&2
    exit 1
  fi
  rm -f "$pip_log"
  hash -r
fi

if command -v kubernetes-validate >/dev/null 2>&1; then
  validate=(kubernetes-validate)
else
  # Installed, but its script is not on PATH (pip --user): run the module.
  validate=(python3 -m kubernetes_validate)
fi

shopt -s nullglob
manifests=(deploy/kubernetes/*.yaml)
if [ ${#manifests[@]} -eq 0 ]; then
  echo "no manifests in deploy/kubernetes/" >&2
  exit 1
fi
echo "== kubernetes manifests (Kubernetes $K8S_VERSION, strict)"
"${validate[@]}" --strict --quiet -k "$K8S_VERSION" "${manifests[@]}"
echo "${#manifests[@]} manifest files valid"
