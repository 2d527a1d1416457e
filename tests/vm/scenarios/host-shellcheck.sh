# SPDX-License-Identifier: GPL-2.0
# vm-scenario: host side: the tier's own scripts are shellcheck clean
#   (host scripts as bash, guest scripts and scenarios as sh).
# where: host
# timeout: 120
# shellcheck shell=bash
set -euo pipefail

: "${REPO_ROOT:?}"
cd "$REPO_ROOT"
shopt -s nullglob
host=(tests/vm/run.sh tests/vm/run-all.sh tests/vm/lib.sh tests/vm/*-fixtures.sh)
guest=(tests/vm/guest/init tests/vm/guest/*.sh)
mapfile -t scenarios < <(grep -L '^# where: host' tests/vm/scenarios/*.sh)
mapfile -t hostscen < <(grep -l '^# where: host' tests/vm/scenarios/*.sh)
# SC1091: sourced files that only exist in the guest (/vm/lib.sh ...).
shellcheck -x -e SC1091 -s bash "${host[@]}" "${hostscen[@]}"
shellcheck -e SC1091 -s sh "${guest[@]}" "${scenarios[@]}"
echo "shellcheck clean: ${#host[@]} host scripts, ${#hostscen[@]} host scenarios," \
	"${#guest[@]} guest scripts, ${#scenarios[@]} guest scenarios"
