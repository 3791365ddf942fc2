#!/usr/bin/env python3
"""tests/observability/promcheck.py: checks of PopugJira's observability files and of the
services' live /metrics, for tests/observability.sh and tests/smoke.sh.

The metric catalog below is the contract with the services (docs/operations.md describes
each metric): the dashboard and the alert rules may name only these metrics and labels,
and a running service must expose the families of its catalog.

  names ALERTS DASHBOARD      every PromQL expression of both names only catalogued metrics,
                              with their own labels and known label values; every
                              catalogued metric is used by one of them
  self-test                   the name checker rejects what it must (and accepts the rest)
  test-coverage ALERTS TESTS  every alert has a unit test case that fires and one that must
                              not
  dashboard-lint DASHBOARD DATASOURCES
                              panel ids unique, every panel and query on the provisioned
                              data source, every panel placed on the grid
  dashboard-rules DASHBOARD OUT
                              writes every dashboard query as a recording rule to OUT, so
                              that `promtool check rules OUT` parses it as PromQL
  deploy COMPOSE PROMETHEUS_YML K8S_DIR PROMETHEUS_K8S_YML OUT
                              compose and Kubernetes agree with the scrape configurations:
                              metrics addresses, ports, annotations; writes OUT, the
                              Kubernetes scrape job with the manifests' pods as static
                              targets, for `deploy-sd`
  deploy-sd K8S_DIR SD_JSON   the output of `promtool check service-discovery OUT
                              popugjira-pods` has exactly one target per service, with
                              its job, metrics port and path
  value NAME [LABEL=VALUE...] < METRICS
                              prints the sum of the samples of NAME with those labels
                              (nothing, exit 1, if there is none)
  families SERVICE < METRICS  every metric family the catalog gives SERVICE is exposed
  live PROMETHEUS_URL ALERTS DASHBOARD
                              against a running Prometheus: every rule evaluates without
                              error and every dashboard query runs without error

Needs PyYAML (the tools venv has it); everything else is the standard library.
"""

import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

# --- the catalog -----------------------------------------------------------------------

ALL = ("account", "taskkeeper", "accounting", "gateway")
WITH_DB = ("account", "taskkeeper", "accounting")
VERIFIERS = ("taskkeeper", "accounting", "gateway")
CONSUMERS = ("taskkeeper", "accounting", "gateway")
GRPC = ("grpc_type", "grpc_service", "grpc_method")

# name: (type, labels, services that expose it)
CATALOG = {
    "grpc_server_started_total": ("counter", GRPC, ALL),
    "grpc_server_handled_total": ("counter", GRPC + ("grpc_code",), ALL),
    "grpc_server_handling_seconds": ("histogram", GRPC, ALL),
    "grpc_server_in_flight_requests": ("gauge", ("grpc_service", "grpc_method"), ALL),
    "process_cpu_seconds_total": ("counter", (), ALL),
    "process_resident_memory_bytes": ("gauge", (), ALL),
    "process_virtual_memory_bytes": ("gauge", (), ALL),
    "process_open_fds": ("gauge", (), ALL),
    "process_max_fds": ("gauge", (), ALL),
    "process_start_time_seconds": ("gauge", (), ALL),
    "popug_build_info": ("gauge", ("service", "version"), ALL),
    "popug_serving": ("gauge", (), ALL),
    "auth_jwks_fetches_total": ("counter", ("result",), VERIFIERS),
    "db_pool_connections": ("gauge", ("state",), WITH_DB),
    "db_pool_max_connections": ("gauge", (), WITH_DB),
    "db_pool_acquire_seconds": ("histogram", (), WITH_DB),
    "eventbus_outbox_pending": ("gauge", (), WITH_DB),
    "eventbus_outbox_oldest_age_seconds": ("gauge", (), WITH_DB),
    "eventbus_relay_published_total": ("counter", (), WITH_DB),
    "eventbus_relay_failures_total": ("counter", (), WITH_DB),
    "eventbus_consumer_processed_total": ("counter", ("consumer",), CONSUMERS),
    "eventbus_consumer_redelivered_total": ("counter", ("consumer",), CONSUMERS),
    "eventbus_consumer_dead_lettered_total": ("counter", ("consumer",), CONSUMERS),
    "eventbus_consumer_pending": ("gauge", ("consumer",), CONSUMERS),
    "eventbus_consumer_ack_pending": ("gauge", ("consumer",), CONSUMERS),
    "eventbus_dead_letters": ("gauge", ("consumer",), CONSUMERS),
    "accounting_ledger_entries_total": ("counter", ("kind",), ("accounting",)),
    "accounting_ledger_cents_total": ("counter", ("kind",), ("accounting",)),
    "accounting_day_closes_total": ("counter", (), ("accounting",)),
    "accounting_payout_mails_total": ("counter", ("status",), ("accounting",)),
    "accounting_last_closed_day_timestamp_seconds": ("gauge", (), ("accounting",)),
    "accounting_payout_mails_unsent": ("gauge", ("state",), ("accounting",)),
    "grpc_client_started_total": ("counter", GRPC + ("upstream",), ("gateway",)),
    "grpc_client_handled_total": ("counter", GRPC + ("upstream", "grpc_code"), ("gateway",)),
    "grpc_client_handling_seconds": ("histogram", GRPC + ("upstream",), ("gateway",)),
    "gateway_refused_total": ("counter", ("reason", "cause"), ("gateway",)),
    "gateway_composition_parts_missing_total": ("counter", ("part",), ("gateway",)),
    "gateway_cache_hits_total": ("counter", (), ("gateway",)),
    "gateway_cache_misses_total": ("counter", (), ("gateway",)),
    "gateway_cache_errors_total": ("counter", (), ("gateway",)),
}
# Series Prometheus makes itself for every target.
SYNTHETIC = {"up": ("gauge", ())}
# Labels every scraped series gets from its target: job and instance; the Kubernetes
# scrape job (deploy/observability/prometheus-kubernetes.yml) adds namespace and pod.
TARGET_LABELS = {"job", "instance", "namespace", "pod"}
# The values a label can take, where the contract fixes them.
GRPC_CODES = (
    "OK Canceled Unknown InvalidArgument DeadlineExceeded NotFound AlreadyExists "
    "PermissionDenied ResourceExhausted FailedPrecondition Aborted OutOfRange "
    "Unimplemented Internal Unavailable DataLoss Unauthenticated"
).split()
LABEL_VALUES = {
    "grpc_code": set(GRPC_CODES),
    "grpc_type": {"unary", "client_stream", "server_stream", "bidi_stream"},
    "result": {"ok", "error"},
    "state": {"in_use", "idle", "queued", "sending", "retrying", "given_up"},
    "kind": {"assign_fee", "completion_reward", "payout"},
    "status": {"sent", "failed"},
    "reason": {"unauthenticated", "permission_denied", "rate_limited", "unimplemented", "other"},
    "cause": {"missing", "invalid", "expired", ""},
    "job": set(ALL),
    # The gateway's upstreams, by the names it gives them.
    "upstream": {"account", "taskkeeper", "accounting"},
}
# Metric families a running service may leave out until the first time it happens (labels
# only known then). Everything else must be there from the start, at zero if need be: an
# alert on `increase(...)` misses the first event of a series that is born at 1.
MAY_BE_ABSENT = {"gateway_composition_parts_missing_total"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

# --- PromQL ------------------------------------------------------------------------------

AGGREGATORS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}
FUNCTIONS = {
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
    "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
    "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg",
    "delta", "deriv", "exp", "floor", "histogram_avg", "histogram_count",
    "histogram_fraction", "histogram_quantile", "histogram_stddev", "histogram_stdvar",
    "histogram_sum", "holt_winters", "hour", "idelta", "increase", "irate", "label_join",
    "label_replace", "last_over_time", "ln", "log10", "log2", "mad_over_time",
    "max_over_time", "min_over_time", "minute", "month", "pi", "predict_linear",
    "present_over_time", "quantile_over_time", "rad", "rate", "resets", "round", "scalar",
    "sgn", "sin", "sinh", "sort", "sort_by_label", "sort_by_label_desc", "sort_desc", "sqrt",
    "stddev_over_time", "stdvar_over_time", "sum_over_time", "tan", "tanh", "time",
    "timestamp", "vector", "year", "start", "end",
}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = GROUPING | {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}

TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<number>(?:0[xX][0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)
                (?:ms|s|m|h|d|w|y|\d|[smhdwy])*)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<range>\[[^\]]*\])
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){},@])
    """,
    re.VERBOSE,
)

# Grafana's variables: the interval ones stand in a range, the others (here only $job,
# a multi-value one) in a regex matcher.
GRAFANA_INTERVAL = re.compile(r"\$(?:__rate_interval|__interval|__range)\b|\$\{__(?:rate_interval|interval|range)\}")
GRAFANA_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def grafana_to_promql(expr):
    """A dashboard query as Prometheus sees it with every variable at 'all'."""
    expr = GRAFANA_INTERVAL.sub("5m", expr)
    return GRAFANA_VARIABLE.sub(".*", expr)


def unquote(literal):
    """The value of a PromQL string literal (escapes reduced to the escaped character)."""
    body = literal[1:-1]
    return body if literal.startswith("`") else re.sub(r"\\(.)", r"\1", body)


def tokenize(expr):
    tokens, pos = [], 0
    while pos < len(expr):
        match = TOKEN.match(expr, pos)
        if not match:
            raise ValueError(f"cannot read {expr[pos:pos + 20]!r}")
        pos = match.end()
        kind = match.lastgroup
        if kind != "space":
            tokens.append((kind, match.group()))
    return tokens


def base_metric(name):
    """(catalogued name, suffix) for a series name, or (None, None)."""
    if name in CATALOG or name in SYNTHETIC:
        return name, ""
    for suffix in HISTOGRAM_SUFFIXES:
        stem = name[: -len(suffix)]
        if name.endswith(suffix) and CATALOG.get(stem, ("",))[0] == "histogram":
            return stem, suffix
    return None, None


def metric_labels(name, suffix):
    labels = set((CATALOG.get(name) or SYNTHETIC[name])[1]) | TARGET_LABELS
    if suffix == "_bucket":
        labels.add("le")
    return labels


def check_value(label, op, value):
    """An error if a matcher asks for a value the label never has."""
    known = LABEL_VALUES.get(label)
    if known is None or op not in ("=", "=~", "!=", "!~"):
        return None
    if op in ("=", "!="):
        wanted = [value]
    elif re.fullmatch(r"[A-Za-z0-9_|]*", value):
        wanted = value.split("|")  # an alternation of plain values
    else:
        return None  # a real regex (.*, a Grafana variable): not checked
    unknown = [v for v in wanted if v not in known]
    if unknown:
        return f"label {label} never has the value(s) {', '.join(map(repr, unknown))}"
    return None


def analyse(expr):
    """(metric names, errors) of one PromQL expression."""
    try:
        tokens = tokenize(expr)
    except ValueError as error:
        return set(), [str(error)]
    names, errors, grouping_labels, used_labels = set(), [], set(), set(TARGET_LABELS)
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else None
        if kind == "ident" and text in GROUPING:
            if following == "(":
                close = next(j for j in range(i + 2, len(tokens)) if tokens[j][1] == ")")
                grouping_labels.update(t for k, t in tokens[i + 2:close] if k == "ident")
                i = close + 1
                continue
        elif kind == "ident" and (text in AGGREGATORS or text.lower() in KEYWORDS):
            pass
        elif kind == "ident" and following == "(":
            if text not in FUNCTIONS:
                errors.append(f"unknown function {text}()")
        elif kind == "ident" or (kind == "op" and text == "{"):
            name = text if kind == "ident" else None
            matchers = []
            j = i + 1 if kind == "ident" else i
            if j < len(tokens) and tokens[j][1] == "{":
                close = next((k for k in range(j, len(tokens)) if tokens[k][1] == "}"), None)
                if close is None:
                    return names, errors + ["unclosed {"]
                body = [t for t in tokens[j + 1:close] if t[1] != ","]
                for m in range(0, len(body) - 2, 3):
                    (_, label), (_, op), (value_kind, literal) = body[m:m + 3]
                    if value_kind != "string":
                        errors.append(f"cannot read the matcher {label}{op}{literal}")
                        continue
                    matchers.append((label, op, unquote(literal)))
                i = close
            for label, op, value in matchers:
                if label == "__name__":
                    if op != "=":
                        errors.append(f"a metric chosen by a regex ({value}) cannot be checked")
                    name = value
            if name is None:
                errors.append("a selector without a metric name")
            else:
                base, suffix = base_metric(name)
                if base is None:
                    errors.append(f"unknown metric {name}")
                else:
                    names.add(base)
                    allowed = metric_labels(base, suffix)
                    used_labels |= allowed
                    for label, op, value in matchers:
                        if label == "__name__":
                            continue
                        if label not in allowed:
                            errors.append(f"{name} has no label {label}")
                        problem = check_value(label, op, value)
                        if problem:
                            errors.append(f"{name}: {problem}")
        i += 1
    # by/without/on/ignoring may name only labels the expression's metrics have (label_*
    # functions make new ones: not checked then).
    if not re.search(r"\blabel_(replace|join)\s*\(", expr):
        for label in sorted(grouping_labels - used_labels):
            errors.append(f"groups by {label}, which none of its metrics has")
    return names, errors


# --- the files ---------------------------------------------------------------------------


def load_yaml(path):
    import yaml  # the tools venv's PyYAML

    with open(path) as f:
        return yaml.safe_load(f)


def load_yaml_all(path):
    import yaml

    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def rule_exprs(path):
    for group in load_yaml(path)["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule.get("record"), rule["expr"]


def walk_panels(panels):
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def dashboard_exprs(path):
    """(where, expression as written) of every query of the dashboard and its variables."""
    with open(path) as f:
        dashboard = json.load(f)
    for panel in walk_panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield f"panel {panel.get('title')!r} query {target.get('refId')}", target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or ""
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query)
        if m:
            yield f"variable {variable['name']}", m.group(1)
        elif re.fullmatch(r"\s*label_values\(\s*\w+\s*\)\s*", query):
            continue  # every value of a label: no metric named
        else:
            m = re.fullmatch(r"\s*query_result\((.*)\)\s*", query)
            yield f"variable {variable['name']}", m.group(1) if m else query


def cmd_names(alerts, dashboard):
    failures, used, count = [], set(), 0
    sources = [(f"{alerts}: alert {name}", expr) for name, expr in rule_exprs(alerts)]
    sources += [(f"{dashboard}: {where}", grafana_to_promql(expr)) for where, expr in dashboard_exprs(dashboard)]
    for where, expr in sources:
        count += 1
        names, errors = analyse(expr)
        used |= names
        for error in errors:
            failures.append(f"{where}: {error}\n    in: {' '.join(expr.split())}")
    unused = sorted(set(CATALOG) - used)
    if unused:
        failures.append("catalogued metrics no panel or alert shows: " + ", ".join(unused))
    for failure in failures:
        print(f"promcheck: {failure}", file=sys.stderr)
    if failures:
        return 1
    print(f"{count} expressions name only the {len(CATALOG)} catalogued metrics (and up), "
          "with their own labels and values; every catalogued metric is used")
    return 0


SELF_TEST = [
    # (expression, the error it must give, or None when it must pass)
    ('sum by (job) (rate(grpc_server_handled_total{grpc_code="OK"}[5m]))', None),
    ('histogram_quantile(0.99, sum by (le) (rate(grpc_server_handling_seconds_bucket[5m])))', None),
    ('sum(rate(db_pool_acquire_seconds_sum[1m])) / sum(rate(db_pool_acquire_seconds_count[1m]))', None),
    ('up{job=~"account|gateway"} == 0', None),
    ('max by (job, consumer) (eventbus_consumer_pending + eventbus_consumer_ack_pending) > 0', None),
    ('time() - max(accounting_last_closed_day_timestamp_seconds offset 1h) > 49 * 3600', None),
    ('sum(popug_serving) by (job) and on (job) (up == 1)', None),
    ('label_replace(up, "service", "$1", "job", "(.*)")', None),
    ('a / on (job) group_left b', "unknown metric a"),
    ('rate(grpc_server_requests_total[5m])', "unknown metric grpc_server_requests_total"),
    ('sum by (job) (rate(grpc_server_handled_total{grpc_status="OK"}[5m]))', "has no label grpc_status"),
    ('grpc_server_handled_total{grpc_code="INTERNAL"}', "never has the value(s) 'INTERNAL'"),
    ('grpc_server_handled_total{grpc_code=~"Internal|Unavalable"}', "'Unavalable'"),
    ('popug_serving_bucket', "unknown metric popug_serving_bucket"),
    ('sum by (consumer) (popug_serving)', "groups by consumer"),
    ('ratee(popug_serving[5m])', "unknown function ratee()"),
    ('{__name__=~"popug_.*"}', "cannot be checked"),
    ('accounting_ledger_cents_total{kind="fee"}', "never has the value(s) 'fee'"),
]


def cmd_self_test():
    bad = []
    for expr, expected in SELF_TEST:
        _, errors = analyse(expr)
        if expected is None and errors:
            bad.append(f"{expr}: rejected ({'; '.join(errors)}) but is fine")
        elif expected is not None and not any(expected in e for e in errors):
            bad.append(f"{expr}: expected an error with {expected!r}, got {errors}")
    for line in bad:
        print(f"promcheck self-test: {line}", file=sys.stderr)
    if bad:
        return 1
    print(f"the name checker rejects {sum(e is not None for _, e in SELF_TEST)} bad expressions "
          f"(unknown metric, label, label value, function) and accepts "
          f"{sum(e is None for _, e in SELF_TEST)} good ones")
    return 0


def cmd_test_coverage(alerts, tests):
    """Every alert of ALERTS has a unit test case that fires and one that does not."""
    cases = {name: [0, 0] for name, _ in rule_exprs(alerts)}
    errors = []
    for test in load_yaml(tests)["tests"]:
        for case in test.get("alert_rule_test", []):
            name = case["alertname"]
            if name not in cases:
                errors.append(f"{tests}: a test of {name}, which alerts.yml does not have")
                continue
            cases[name][1 if case.get("exp_alerts") else 0] += 1
    for name, (quiet, firing) in cases.items():
        if not firing:
            errors.append(f"{tests}: no case where {name} fires")
        if not quiet:
            errors.append(f"{tests}: no case where {name} must not fire")
    for error in errors:
        print(f"promcheck: {error}", file=sys.stderr)
    if errors:
        return 1
    print(f"each of the {len(cases)} alerts has a unit test case that fires and one that must not")
    return 0


def cmd_dashboard_lint(dashboard, datasources):
    with open(dashboard) as f:
        doc = json.load(f)
    uids = {d["uid"] for d in load_yaml(datasources)["datasources"]}
    errors, ids, panels = [], set(), list(walk_panels(doc.get("panels", [])))
    for key in ("uid", "title", "schemaVersion"):
        if not doc.get(key):
            errors.append(f"the dashboard has no {key}")
    for panel in panels:
        title = panel.get("title", "?")
        if panel.get("id") in ids:
            errors.append(f"panel id {panel.get('id')} used twice ({title})")
        ids.add(panel.get("id"))
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(k), int) for k in ("h", "w", "x", "y")) or grid["x"] + grid["w"] > 24:
            errors.append(f"panel {title!r}: bad gridPos {grid}")
        if panel.get("type") == "row":
            continue
        for item in [panel] + panel.get("targets", []):
            ds = item.get("datasource") or {}
            if ds.get("uid") not in uids:
                errors.append(f"panel {title!r}: data source {ds} is not a provisioned one {sorted(uids)}")
        if not panel.get("targets"):
            errors.append(f"panel {title!r} has no query")
        refs = [t.get("refId") for t in panel.get("targets", [])]
        if len(refs) != len(set(refs)):
            errors.append(f"panel {title!r}: refIds {refs} not unique")
    for variable in doc.get("templating", {}).get("list", []):
        ds = variable.get("datasource") or {}
        if variable.get("type") == "query" and ds.get("uid") not in uids:
            errors.append(f"variable {variable.get('name')}: data source {ds} is not provisioned")
    for error in errors:
        print(f"promcheck: {dashboard}: {error}", file=sys.stderr)
    if errors:
        return 1
    print(f"{len(panels)} panels with unique ids, each on the grid and on the provisioned "
          f"data source ({', '.join(sorted(uids))})")
    return 0


def cmd_dashboard_rules(dashboard, out):
    import yaml

    rules = [
        {"record": f"popugjira:dashboard_query_{n}", "expr": grafana_to_promql(expr)}
        for n, (_, expr) in enumerate(dashboard_exprs(dashboard))
    ]
    with open(out, "w") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f, sort_keys=False)
    print(len(rules))
    return 0


# --- the deploy files agree ---------------------------------------------------------------

# The variable that sets each service's metrics address, and its port.
METRICS_ADDR = {
    "account": ("ACCOUNT__HTTP_ADDR", 8081),
    "taskkeeper": ("TASKKEEPER__METRICS_ADDR", 8082),
    "accounting": ("ACCOUNTING__METRICS_ADDR", 8083),
    "gateway": ("GATEWAY__LISTEN_ADDR", 8080),
}


def k8s_workloads(k8s_dir):
    """name: Deployment or StatefulSet of every manifest in k8s_dir."""
    import glob

    found = {}
    for path in sorted(glob.glob(f"{k8s_dir}/*.yaml")):
        for doc in load_yaml_all(path):
            if doc.get("kind") in ("Deployment", "StatefulSet"):
                found[doc["metadata"]["name"]] = doc
    return found


def k8s_deployments(k8s_dir):
    return {n: d for n, d in k8s_workloads(k8s_dir).items() if n in METRICS_ADDR and d["kind"] == "Deployment"}


def pod_targets(name, template, ip):
    """The pod of a workload as Kubernetes discovery shows it: one target per declared
    container port, with the pod's annotations and labels as meta labels."""
    def meta(kind, mapping):
        return {f"__meta_kubernetes_pod_{kind}_{re.sub('[^a-zA-Z0-9_]', '_', k)}": v for k, v in mapping.items()}

    labels = meta("annotation", template["metadata"].get("annotations", {}))
    labels |= meta("label", template["metadata"].get("labels", {}))
    labels |= {"__meta_kubernetes_pod_phase": "Running", "__meta_kubernetes_namespace": "popugjira",
               "__meta_kubernetes_pod_name": f"{name}-0"}
    ports = [p for c in template["spec"]["containers"] for p in c.get("ports", [])]
    return [{"targets": [f"{ip}:{p['containerPort']}"],
             "labels": labels | {"__meta_kubernetes_pod_container_port_name": p.get("name", "")}}
            for p in ports]


def cmd_deploy(compose, prometheus_yml, k8s_dir, prometheus_k8s, out):
    errors = []
    services = load_yaml(compose)["services"]
    jobs = {j["job_name"]: j for j in load_yaml(prometheus_yml)["scrape_configs"]}
    for name, (variable, port) in METRICS_ADDR.items():
        env = services.get(name, {}).get("environment", {})
        if env.get(variable) != f"0.0.0.0:{port}":
            errors.append(f"compose: {name} sets {variable}={env.get(variable)!r}, not 0.0.0.0:{port}")
        targets = [t for c in jobs.get(name, {}).get("static_configs", []) for t in c["targets"]]
        if targets != [f"{name}:{port}"]:
            errors.append(f"prometheus.yml: job {name} scrapes {targets}, not {name}:{port}")
    for name in ("prometheus", "grafana"):
        if name not in services:
            errors.append(f"compose: no {name} service")

    deployments = k8s_deployments(k8s_dir)
    pods = []
    for name, (variable, port) in METRICS_ADDR.items():
        deployment = deployments.get(name)
        if deployment is None:
            errors.append(f"k8s: no Deployment {name}")
            continue
        template = deployment["spec"]["template"]
        annotations = template["metadata"].get("annotations", {})
        want = {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}
        for key, value in want.items():
            if annotations.get(key) != value:
                errors.append(f"k8s: {name}'s pods have {key}={annotations.get(key)!r}, not {value!r}")
        container = template["spec"]["containers"][0]
        named = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        if named.get("metrics") != port:
            errors.append(f"k8s: {name}'s container port named metrics is {named.get('metrics')}, not {port}")
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        if env.get(variable) != f"0.0.0.0:{port}":
            errors.append(f"k8s: {name} sets {variable}={env.get(variable)!r}, not 0.0.0.0:{port}")
    # Every pod of the kustomization (PostgreSQL, NATS, Redis too: they must be left out).
    for n, (name, workload) in enumerate(sorted(k8s_workloads(k8s_dir).items())):
        pods += pod_targets(name, workload["spec"]["template"], f"10.0.0.{n + 1}")
    config = load_yaml(prometheus_k8s)
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "popugjira-pods"]
    if not job.get("kubernetes_sd_configs"):
        errors.append("prometheus-kubernetes.yml: job popugjira-pods has no kubernetes_sd_configs")
    del job["kubernetes_sd_configs"]
    job["static_configs"] = pods
    config.pop("rule_files", None)
    import yaml

    with open(out, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    for error in errors:
        print(f"promcheck: {error}", file=sys.stderr)
    if errors:
        return 1
    print("compose and Kubernetes set every metrics address on 0.0.0.0; the scrape "
          "configurations, ports named metrics and prometheus.io annotations agree")
    return 0


def cmd_deploy_sd(k8s_dir, sd_json):
    with open(sd_json) as f:
        targets = json.load(f)
    kept = {json.dumps(t["labels"], sort_keys=True) for t in targets if t["labels"]}
    got = {}
    for labels in map(json.loads, kept):
        got.setdefault(labels["job"], []).append(labels)
    errors = []
    deployments = k8s_deployments(k8s_dir)
    for name, (_, port) in METRICS_ADDR.items():
        mine = got.pop(name, [])
        if len(mine) != 1:
            errors.append(f"{name}: {len(mine)} targets after relabelling, not 1: {mine}")
            continue
        (labels,) = mine
        if not labels["__address__"].endswith(f":{port}") or labels["__metrics_path__"] != "/metrics":
            errors.append(f"{name}: scraped at {labels['__address__']}{labels['__metrics_path__']}")
        if name not in deployments:
            errors.append(f"{name}: no Deployment")
    for job, labels in got.items():
        errors.append(f"unexpected job {job}: {labels}")
    for error in errors:
        print(f"promcheck: Kubernetes discovery: {error}", file=sys.stderr)
    if errors:
        return 1
    print("Kubernetes discovery (simulated from every pod of deploy/k8s) gives one target per "
          "service, with its job, metrics port and /metrics, and none for the infrastructure")
    return 0


# --- live metrics ---------------------------------------------------------------------------

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(\s+\S+)?$')
LABEL_PAIR = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def parse_samples(text):
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = SAMPLE.match(line.strip())
        if not m:
            continue
        labels = {k: v.encode().decode("unicode_escape") for k, v in LABEL_PAIR.findall((m.group(2) or "{}")[1:-1])}
        yield m.group(1), labels, float(m.group(3))


def cmd_value(name, wanted):
    want = dict(w.split("=", 1) for w in wanted)
    values = [v for n, labels, v in parse_samples(sys.stdin.read())
              if n == name and all(labels.get(k, "") == v for k, v in want.items())]
    if not values:
        return 1
    total = sum(values)
    print(int(total) if total == int(total) else total)
    return 0


def cmd_families(service):
    text = sys.stdin.read()
    present = set()
    for line in text.splitlines():
        m = re.match(r"#\s*(?:TYPE|HELP)\s+(\S+)", line)
        if m:
            present.update({m.group(1), m.group(1) + "_total"})
    for name, _, _ in parse_samples(text):
        present.add(name)
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix):
                present.add(name[: -len(suffix)])
    expected = sorted(n for n, (_, _, services) in CATALOG.items() if service in services)
    missing = [n for n in expected if n not in present and n not in MAY_BE_ABSENT]
    if missing:
        print(f"promcheck: {service} does not expose: {', '.join(missing)}", file=sys.stderr)
        return 1
    print(len(expected))
    return 0


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def cmd_live(prometheus, alerts, dashboard):
    import time

    errors = []
    deadline = time.monotonic() + 30
    while True:  # until every rule has been evaluated once
        rules = get_json(f"{prometheus}/api/v1/rules")["data"]["groups"]
        evaluated = [r for g in rules for r in g["rules"]]
        if all(r.get("health") != "unknown" for r in evaluated) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    expected = {name for name, _ in rule_exprs(alerts)}
    if {r["name"] for r in evaluated} != expected:
        errors.append(f"Prometheus loaded the rules {sorted(r['name'] for r in evaluated)}, expected {sorted(expected)}")
    for rule in evaluated:
        if rule.get("health") != "ok":
            errors.append(f"rule {rule['name']}: health {rule.get('health')}: {rule.get('lastError')}")
    queries = 0
    for where, expr in dashboard_exprs(dashboard):
        queries += 1
        url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": grafana_to_promql(expr)})
        try:
            answer = get_json(url)
        except urllib.error.HTTPError as error:
            answer = json.loads(error.read() or b"{}")
        if answer.get("status") != "success":
            errors.append(f"{where}: {answer.get('errorType')}: {answer.get('error')}\n    in: {expr}")
    for error in errors:
        print(f"promcheck: live: {error}", file=sys.stderr)
    if errors:
        return 1
    print(f"{len(evaluated)} alert rules evaluated without error; {queries} dashboard queries ran")
    return 0


def main(argv):
    commands = {
        "names": (cmd_names, 2),
        "self-test": (cmd_self_test, 0),
        "test-coverage": (cmd_test_coverage, 2),
        "dashboard-lint": (cmd_dashboard_lint, 2),
        "dashboard-rules": (cmd_dashboard_rules, 2),
        "deploy": (cmd_deploy, 5),
        "deploy-sd": (cmd_deploy_sd, 2),
        "families": (cmd_families, 1),
        "live": (cmd_live, 3),
    }
    if len(argv) >= 2 and argv[0] == "value":
        return cmd_value(argv[1], argv[2:])
    if not argv or argv[0] not in commands or len(argv) - 1 != commands[argv[0]][1]:
        print(__doc__, file=sys.stderr)
        return 2
    function, _ = commands[argv[0]]
    return function(*argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
