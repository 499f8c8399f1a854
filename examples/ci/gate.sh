#!/usr/bin/env bash
# A CI performance gate: tune on a small budget, check the best against the champion,
# leave a Markdown summary, a JUnit report and a JSON verdict in $OUT.
#
#   MLFLOW_TRACKING_URI=sqlite:///registry.db bash examples/ci/gate.sh
#
# Exit status: 0 pass (or the first champion registered), 1 a regression, 2 a usage error.
# With PROMOTE=1 (e.g. on the main branch) a passing candidate becomes the champion.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
study_file="${STUDY_FILE:-$here/study.toml}"
model="${MODEL:-ci-diabetes}"
out="${OUT:-gate}"
: "${MLFLOW_TRACKING_URI:?set MLFLOW_TRACKING_URI to the registry that holds the champion}"
frugalml="${FRUGALML:-frugalml}"
# a folder per run: the registry keeps a registered version's files in its study's folder
study_dir="$out/studies/run-$(date -u +%Y%m%dT%H%M%S)-$$"
mkdir -p "$out"

$frugalml tune "$study_file" --directory "$study_dir" --no-progress

if ! $frugalml lineage "models:/$model@champion" --tracking-uri "$MLFLOW_TRACKING_URI" > /dev/null 2>&1; then
    $frugalml register "$study_dir" --name "$model" --alias champion --tracking-uri "$MLFLOW_TRACKING_URI"
    echo "### frugalml check: no champion yet; registered this study's best as \`$model@champion\`" > "$out/summary.md"
    exit 0
fi

status=0
$frugalml check "$study_dir" --baseline "models:/$model@champion" --tracking-uri "$MLFLOW_TRACKING_URI" \
    --gate "$study_file" --json "$out/check.json" --junit "$out/junit.xml" --markdown "$out/summary.md" || status=$?
if [ "$status" -eq 0 ] && [ "${PROMOTE:-0}" = "1" ]; then
    $frugalml register "$study_dir" --name "$model" --alias champion --tracking-uri "$MLFLOW_TRACKING_URI"
fi
exit "$status"
