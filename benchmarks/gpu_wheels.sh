#!/usr/bin/env bash
# Download, into ./.whl of the project root, wheels for the packages that the GPU machine's image lacks
# (it has torch, numpy, pandas, scikit-learn, matplotlib, scipy, pytest, pytest-xdist, but not mlflow,
# optuna or lenstronomy). Run from the project root with .venv built. Add /.whl/ to .git/info/exclude
# and send .whl/ along to the GPU machine (benchmarks/gpu_setup.sh installs them there). About 50 MB.
#   bash benchmarks/gpu_wheels.sh
set -euo pipefail
have="$(dirname "$0")/gpu_image_packages.txt"  # pip names the GPU machine image already has
mkdir -p .whl
.venv/bin/pip freeze | grep -v -e '^-e' -e '^#' -e ' @ ' |  # ' @ ': installed from a local file (a dev tool), not on PyPI
  sed 's/==/ /' | while read -r name ver; do
  key=$(echo "$name" | tr 'A-Z_' 'a-z-')
  grep -qx "$key" "$have" && continue
  case "$key" in dlfm|torch|torchvision|triton|nvidia-*|playwright|moto|boto3|botocore|s3transfer|psycopg2-binary|mgefit|jampy|plotbin|capfit|cfn-lint|aws-xray-sdk|py-partiql-parser|responses|docker|joserfc|jsonpatch|jsonpointer|pyee|greenlet|xmltodict|openapi-*|jsonschema-path|pathable|lazy-object-proxy|rfc3339-validator|jsonpath-ng|sympy|mpmath|networkx|mkdocs*|babel|grimp|import-linter|backrefs|pymdown-extensions|paginate|mergedeep|ghp-import|pyyaml-env-tag|watchdog) continue;; esac  # dev and docs tools
  echo "$name==$ver"
done > .whl/requirements.txt
P="--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_34_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux1_x86_64"
while read -r req; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $P -d .whl "$req" 2>/dev/null \
    || python3 -m pip wheel -q --no-deps -w .whl "$req" \
    || echo "gpu_wheels.sh: no wheel for $req (skipped)" >&2   # pure-Python sdists (lenstronomy) build here
done < .whl/requirements.txt
du -sh .whl
