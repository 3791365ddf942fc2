#!/usr/bin/env bash
# tests/observability.sh — observability as code, checked offline (no service runs):
#   - deploy/observability/prometheus.yml with its rule file (promtool check config);
#   - the Kubernetes scrape job (prometheus-kubernetes.yml) against the pods of deploy/k8s:
#     promtool relabels them as Kubernetes discovery would show them, and exactly the four
#     services come out, each on its metrics port (Debian's promtool has no Kubernetes
#     discovery, so the manifests' pods stand in as static targets), and compose, the
#     manifests and both scrape configurations agree on the metrics addresses;
#   - alerts.yml (promtool check rules) and its unit tests alerts.test.yml (promtool test
#     rules), with a firing and a quiet case for every alert;
#   - every PromQL expression of the alerts and of the Grafana dashboard names only the
#     metrics the services expose (the catalog in tests/observability/promcheck.py, the
#     contract docs/operations.md describes), with their own labels and label values;
#   - the dashboard: every query parses as PromQL (promtool), every panel is on the
#     provisioned data source.
# The live side — the services' /metrics and a real Prometheus scraping them — is in
# tests/smoke.sh. Prints one line per check; the last is "observability: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=deploy/infra.sh
. deploy/infra.sh
ensure_prometheus
# PyYAML for the checker (kubernetes-validate brings the same version along).
ensure_pip_tool PyYAML 6.0.4

obs=deploy/observability
dashboard=$obs/grafana/dashboards/popugjira.json
datasources=$obs/grafana/provisioning/datasources/prometheus.yml
promcheck() { "$POPUG_TOOLS_VENV/bin/python" tests/observability/promcheck.py "$@"; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

passed=0 failed=0
# check NAME CMD...: runs CMD; prints "ok - NAME" (with the last line CMD printed, when it
# says what was checked) or "not ok - NAME" and everything CMD printed.
check() {
  local name="$1" status=0 said
  shift
  "$@" >"$work/out" 2>&1 || status=$?
  if ((status == 0)); then
    passed=$((passed + 1))
    said="$(tail -n 1 "$work/out")"
    [[ "$said" == *" "* && "$said" != *SUCCESS* ]] && name="$name: $said"
    echo "ok - $name"
  else
    failed=$((failed + 1))
    echo "not ok - $name"
    sed 's/^/    /' "$work/out"
  fi
}

check "promtool check config: prometheus.yml and its rule file" \
  promtool check config "$obs/prometheus.yml"

deploy_agree() {
  promcheck deploy deploy/compose.yaml "$obs/prometheus.yml" deploy/k8s \
    "$obs/prometheus-kubernetes.yml" "$work/kubernetes.yml"
}
check "deploy files agree on the metrics addresses" deploy_agree

kubernetes_job() {
  # The rule file is checked above; this is the scrape job and its relabelling.
  promtool check config "$work/kubernetes.yml" &&
    promtool check service-discovery --timeout=2s "$work/kubernetes.yml" popugjira-pods >"$work/sd.json" &&
    promcheck deploy-sd deploy/k8s "$work/sd.json"
}
check "prometheus-kubernetes.yml relabels the pods of deploy/k8s" kubernetes_job

check "promtool check rules alerts.yml" promtool check rules "$obs/alerts.yml"
# promtool resolves rule_files relative to the test file.
check "promtool test rules alerts.test.yml" promtool test rules "$obs/alerts.test.yml"
check "alert unit tests cover every alert" promcheck test-coverage "$obs/alerts.yml" "$obs/alerts.test.yml"

check "the metric-name checker catches bad expressions" promcheck self-test
check "alerts and dashboard name only the services' metrics" promcheck names "$obs/alerts.yml" "$dashboard"

dashboard_promql() {
  local count
  count="$(promcheck dashboard-rules "$dashboard" "$work/dashboard-rules.yml")" &&
    promtool check rules "$work/dashboard-rules.yml" >/dev/null &&
    echo "$count dashboard queries (variables at 'all') parse as PromQL"
}
check "the dashboard's queries are PromQL" dashboard_promql
check "the dashboard is consistent" promcheck dashboard-lint "$dashboard" "$datasources"

echo "observability: $passed passed, $failed failed"
((failed == 0))
