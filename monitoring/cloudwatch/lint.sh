#!/usr/bin/env bash
# Lints the CloudFormation templates of monitoring/cloudwatch/ with cfn-lint.
#
# cfn-lint lives in a virtualenv under the workspace's target directory
# (target/cfn-venv, or $CFN_LINT_VENV), created on first use with a pinned
# version so every run checks against the same rules and resource specs.
# Exits non-zero when cfn-lint reports anything (errors, warnings or
# informational findings), or when it cannot be installed.
#
#   monitoring/cloudwatch/lint.sh            # every template here
#   monitoring/cloudwatch/lint.sh FILE...    # just these
set -euo pipefail

CFN_LINT_VERSION="1.58.0"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${CFN_LINT_VENV:-$root/target/cfn-venv}"

if [ ! -x "$venv/bin/cfn-lint" ] \
  || [ "$("$venv/bin/cfn-lint" --version 2>/dev/null)" != "cfn-lint $CFN_LINT_VERSION" ]; then
  echo "== installing cfn-lint $CFN_LINT_VERSION into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "cfn-lint==$CFN_LINT_VERSION"
fi

if [ "$#" -gt 0 ]; then
  templates=("$@")
else
  templates=()
  for f in "$here"/*.yaml "$here"/*.yml "$here"/*.json; do
    [ -e "$f" ] && templates+=("$f")
  done
fi
if [ "${#templates[@]}" -eq 0 ]; then
  echo "no CloudFormation template found in $here" >&2
  exit 1
fi

echo "== cfn-lint $CFN_LINT_VERSION: ${templates[*]#"$root"/}" >&2
# Every finding fails (cfn-lint exits 2 for errors, 4 for warnings, 8 for
# informational findings; their sum when several kinds are found).
"$venv/bin/cfn-lint" --include-checks I --non-zero-exit-code informational \
  --format parseable -- "${templates[@]}"
echo "cfn-lint: no findings" >&2
