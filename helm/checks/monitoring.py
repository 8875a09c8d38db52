"""The chart's alerts and dashboard, checked offline; used by chart_check.py.

On every rendering that holds them:

- the PrometheusRule: its groups and rules have the fields Prometheus reads
  and no other, unique alert names, a valid `for`, a `severity` label, a
  summary, a description and a `runbook_url` pointing at the alert's section
  of docs/runbook.md, and an expression that promql-parser (the PromQL parser
  of GreptimeDB, in Rust) parses to an instant vector;
- the dashboard ConfigMap: the Grafana sidecar's label, one JSON file that
  parses, panels that fit the grid without overlapping, and every panel
  target and template variable query parsed the same way once Grafana's
  variables are put in.

On the rendering with every alert and the dashboard on, the alerts are the
ones values.schema.json lets `disabled` name and the runbook has a section
for, each section names the series its alert reads, and the metric names the
alerts and the dashboard use are the ones helm/checks/metrics-used.txt lists
(the fleet's integration test, scheduler/tests/it/chart_metrics.rs, checks
each of them against a running scheduler and worker).

    python helm/checks/monitoring.py          # print the metric names
    python helm/checks/monitoring.py --write  # write helm/checks/metrics-used.txt
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import promql_parser
import yaml

REPO = Path(__file__).resolve().parent.parent.parent
CHART = REPO / "helm" / "syncfleet"
RUNBOOK = REPO / "docs" / "runbook.md"
LISTING = REPO / "helm" / "checks" / "metrics-used.txt"

# The rendering every alert and the dashboard are checked on (with the one
# required value of the chart, an example encryption key).
FULL_VALUES: dict[str, Any] = {
    "secrets": {
        "encryption": {"values": {"SYNCFLEET_ENCRYPTION_KEYS": "1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}}
    },
    "metrics": {
        "prometheusRule": {"enabled": True, "runbookUrl": "https://git.example.com/syncfleet/blob/main/docs/runbook.md"},
        "grafanaDashboard": {"enabled": True},
    },
}
RELEASE = "syncfleet"
NAMESPACE = "syncfleet"

# Series that are not the fleet's own, with where they come from; the
# runbook section of an alert reading one says so, and the fleet's
# integration test skips them.
EXTERNAL = {"kube_pod_container_status_restarts_total": "kube-state-metrics"}

# The series the dashboard must show (issue 16: queue depth, sessions by
# status, scheduling lag, dead letters, throttled answers, rate-limit
# deferrals, in flight, outbox, auto-suspended users, the leader).
DASHBOARD_REQUIRED = {
    "syncfleet_queue_depth",
    "syncfleet_sessions_total",
    "syncfleet_scheduling_lag_seconds_bucket",
    "syncfleet_dead_letters_total",
    "syncfleet_provider_throttled_total",
    "syncfleet_rate_limit_deferrals_total",
    "syncfleet_worker_in_flight",
    "syncfleet_outbox_backlog",
    "syncfleet_users_auto_suspended",
    "syncfleet_scheduler_leader",
}

# Grafana's variables, replaced by a value of their kind before parsing.
GRAFANA_BUILTINS = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
    "__range_s": "3600",
    "__interval_ms": "60000",
}
GRAFANA_VARIABLE = re.compile(r"\$\{([A-Za-z0-9_]+)(?::[A-Za-z]+)?\}|\$([A-Za-z0-9_]+)|\[\[([A-Za-z0-9_]+)\]\]")
LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*)?([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$")

RULE_FIELDS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
ANNOTATIONS = {"summary", "description", "runbook_url"}
SEVERITIES = {"critical", "warning", "info"}
GRID_COLUMNS = 24
CONFIGMAP_LIMIT = 1024 * 1024


# PromQL


def value_type(expr: promql_parser.Expr) -> str:
    """The PromQL type an expression evaluates to: vector, matrix, scalar or string."""
    if isinstance(expr, (promql_parser.MatrixSelector, promql_parser.SubqueryExpr)):
        return "matrix"
    if isinstance(expr, (promql_parser.VectorSelector, promql_parser.AggregateExpr)):
        return "vector"
    if isinstance(expr, promql_parser.NumberLiteral):
        return "scalar"
    if isinstance(expr, promql_parser.StringLiteral):
        return "string"
    if isinstance(expr, promql_parser.ParenExpr):
        return value_type(expr.expr)
    if isinstance(expr, promql_parser.UnaryExpr):
        return value_type(expr.expr)
    if isinstance(expr, promql_parser.BinaryExpr):
        sides = {value_type(expr.lhs), value_type(expr.rhs)}
        return "vector" if "vector" in sides else "scalar"
    if isinstance(expr, promql_parser.Call):
        return str(expr.func.return_type).rsplit(".", 1)[-1].lower()
    raise ValueError(f"unknown expression node {type(expr).__name__}")


def metric_names(query: str) -> tuple[list[str], str | None, str | None]:
    """Parses `query`: (the metric names it selects, its type, the parse error or None)."""
    try:
        expr = promql_parser.parse(query)
    except ValueError as error:
        return [], None, str(error)
    names: list[str] = []
    nameless: list[str] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.append(node.name)
                return
            exact = [m.value for m in node.matchers.matchers if m.name == "__name__" and m.op == promql_parser.MatchOp.Equal]
            if exact:
                names.extend(exact)
            else:
                nameless.append(str(node))

    promql_parser.walk(expr, pre_visit=visit)
    if nameless:
        return names, None, f"selects no single metric name: {', '.join(nameless)}"
    return names, value_type(expr), None


def grafana_query(text: str, variables: set[str]) -> tuple[str, list[str]]:
    """`text` with Grafana's variables replaced; the names of the variables it uses that are not defined."""
    unknown = []

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name in GRAFANA_BUILTINS:
            return GRAFANA_BUILTINS[name]
        if name not in variables:
            unknown.append(name)
        return "example"

    return GRAFANA_VARIABLE.sub(replace, text), unknown


# The runbook


def runbook_sections(text: str) -> dict[str, str]:
    """The runbook's `## ` sections by their GitHub anchor (the heading in lower case, spaces as dashes)."""
    sections: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("## "):
            heading = line[3:].strip()
            current = re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-")
            sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
    return sections


# The PrometheusRule


def check_rule(obj: dict[str, Any], values: dict[str, Any], runbook: dict[str, str]) -> tuple[list[str], dict[str, str], list[str]]:
    """Problems of one rendered PrometheusRule, the metric names its alerts use (by alert), and its alert names."""
    problems: list[str] = []
    used: dict[str, str] = {}
    alerts: list[str] = []
    settings = values["metrics"]["prometheusRule"]
    labels = obj.get("metadata", {}).get("labels", {})
    missing = {k: v for k, v in (settings.get("labels") or {}).items() if labels.get(k) != v}
    if missing:
        problems.append(f"metadata.labels lack {missing}")
    groups = obj.get("spec", {}).get("groups") or []
    if not groups:
        problems.append("no rule group")
    group_names = [group.get("name") for group in groups]
    if len(set(group_names)) != len(group_names):
        problems.append(f"group names repeat: {group_names}")
    for group in groups:
        for index, rule in enumerate(group.get("rules") or []):
            name = rule.get("alert")
            where = f"{group.get('name')}[{index}] {name or '(no alert)'}"
            unknown = set(rule) - RULE_FIELDS
            if unknown:
                problems.append(f"{where}: unknown fields {sorted(unknown)}")
            if not name or not re.fullmatch(r"Syncfleet[A-Z][A-Za-z]+", name):
                problems.append(f"{where}: alert name is not Syncfleet<CamelCase>")
                continue
            if name in alerts:
                problems.append(f"{where}: alert defined twice")
            alerts.append(name)
            try:
                promql_parser.parse_duration(str(rule.get("for", "")))
            except ValueError as error:
                problems.append(f"{where}: for {rule.get('for')!r}: {error}")
            rule_labels = rule.get("labels") or {}
            if rule_labels.get("severity") not in SEVERITIES:
                problems.append(f"{where}: severity label {rule_labels.get('severity')!r} not in {sorted(SEVERITIES)}")
            for key, value in (settings.get("alertLabels") or {}).items():
                if rule_labels.get(key) != value:
                    problems.append(f"{where}: alert label {key} missing")
            annotations = rule.get("annotations") or {}
            if set(annotations) != ANNOTATIONS:
                problems.append(f"{where}: annotations are {sorted(annotations)}, not {sorted(ANNOTATIONS)}")
            for key, text in annotations.items():
                if str(text).count("{{") != str(text).count("}}"):
                    problems.append(f"{where}: annotation {key} has unbalanced {{{{ }}}}")
            url = str(annotations.get("runbook_url", ""))
            anchor = name.lower()
            if url != f"{settings['runbookUrl']}#{anchor}":
                problems.append(f"{where}: runbook_url {url!r} is not runbookUrl#{anchor}")
            section = runbook.get(anchor)
            if section is None:
                problems.append(f"{where}: docs/runbook.md has no section '## {name}'")
            names, kind, error = metric_names(str(rule.get("expr", "")))
            if error:
                problems.append(f"{where}: expr does not parse: {error}")
                continue
            if kind != "vector":
                problems.append(f"{where}: expr is a {kind}, not an instant vector")
            for metric in names:
                used[metric] = name
                if section is not None and metric not in section:
                    problems.append(f"{where}: its runbook section does not name {metric}")
                source = EXTERNAL.get(metric)
                if source and section is not None and source not in section:
                    problems.append(f"{where}: its runbook section does not say {metric} comes from {source}")
    return problems, used, alerts


# The dashboard


def overlaps(a: dict[str, int], b: dict[str, int]) -> bool:
    return a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"] and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]


def check_dashboard(dashboard: dict[str, Any]) -> tuple[list[str], set[str]]:
    """Problems of a dashboard's JSON and the metric names its queries use."""
    problems: list[str] = []
    used: set[str] = set()
    for field in ("title", "uid", "schemaVersion", "panels", "templating"):
        if field not in dashboard:
            problems.append(f"no {field}")
    if len(str(dashboard.get("uid", ""))) > 40:
        problems.append("uid longer than 40 characters")
    variables = [v for v in dashboard.get("templating", {}).get("list", [])]
    names = [v.get("name") for v in variables]
    if len(set(names)) != len(names):
        problems.append(f"template variables repeat: {names}")
    defined = set(names)
    datasources = [v for v in variables if v.get("type") == "datasource" and v.get("query") == "prometheus"]
    if not datasources:
        problems.append("no Prometheus data source variable")
    for variable in variables:
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query)
        text, unknown = grafana_query(text, defined - {variable.get("name")})
        if unknown:
            problems.append(f"variable {variable.get('name')}: undefined variables {unknown}")
        match = LABEL_VALUES.match(text)
        if match:
            if match.group(1):
                used.add(match.group(1))
            continue
        metrics, _, error = metric_names(text)
        if error:
            problems.append(f"variable {variable.get('name')}: query does not parse: {error}")
        used.update(metrics)

    panels = dashboard.get("panels", [])
    ids = [panel.get("id") for panel in panels]
    if len(set(ids)) != len(ids) or None in ids:
        problems.append(f"panel ids missing or repeated: {ids}")
    placed: list[tuple[str, dict[str, int]]] = []
    for panel in panels:
        title = panel.get("title", f"panel {panel.get('id')}")
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(k), int) for k in ("x", "y", "w", "h")):
            problems.append(f"{title}: gridPos needs whole x, y, w and h")
            continue
        if grid["x"] < 0 or grid["w"] < 1 or grid["x"] + grid["w"] > GRID_COLUMNS:
            problems.append(f"{title}: gridPos outside the {GRID_COLUMNS} columns")
        for other, other_grid in placed:
            if overlaps(grid, other_grid):
                problems.append(f"{title}: overlaps {other}")
        placed.append((title, grid))
        if panel.get("type") == "row":
            continue
        source = panel.get("datasource", {})
        if not isinstance(source, dict) or source.get("uid") != "${datasource}":
            problems.append(f"{title}: datasource is not the ${{datasource}} variable")
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{title}: no target")
        references = [target.get("refId") for target in targets]
        if len(set(references)) != len(references):
            problems.append(f"{title}: refIds repeat")
        for target in targets:
            query, unknown = grafana_query(str(target.get("expr", "")), defined)
            if unknown:
                problems.append(f"{title} {target.get('refId')}: undefined variables {unknown}")
            metrics, kind, error = metric_names(query)
            if error:
                problems.append(f"{title} {target.get('refId')}: expr does not parse: {error}")
            elif kind not in ("vector", "scalar"):
                problems.append(f"{title} {target.get('refId')}: expr is a {kind}, not a vector or a scalar")
            used.update(metrics)
    missing = sorted(DASHBOARD_REQUIRED - used)
    if missing:
        problems.append(f"no panel shows {missing}")
    return problems, used


def check_dashboard_configmap(obj: dict[str, Any], values: dict[str, Any]) -> tuple[list[str], set[str]]:
    """Problems of the dashboard's ConfigMap and of the dashboard it holds."""
    settings = values["metrics"]["grafanaDashboard"]
    problems: list[str] = []
    labels = obj.get("metadata", {}).get("labels", {})
    if labels.get(settings["sidecarLabel"]) != settings["sidecarLabelValue"]:
        problems.append(f"label {settings['sidecarLabel']}={settings['sidecarLabelValue']!r} missing")
    if settings.get("namespace") and obj["metadata"].get("namespace") != settings["namespace"]:
        problems.append(f"namespace is not {settings['namespace']}")
    data = obj.get("data", {})
    files = [key for key in data if key.endswith(".json")]
    if len(files) != 1 or len(data) != 1:
        problems.append(f"data holds {sorted(data)}, not one .json file")
    size = sum(len(key) + len(value.encode()) for key, value in data.items())
    if size > CONFIGMAP_LIMIT:
        problems.append(f"data is {size} bytes, above a ConfigMap's {CONFIGMAP_LIMIT}")
    used: set[str] = set()
    for key in files:
        try:
            dashboard = json.loads(data[key])
        except json.JSONDecodeError as error:
            problems.append(f"{key} does not parse: {error}")
            continue
        found, used = check_dashboard(dashboard)
        problems += [f"{key}: {problem}" for problem in found]
    return problems, used


# On a rendering


def is_dashboard(obj: dict[str, Any]) -> bool:
    return obj.get("kind") == "ConfigMap" and obj.get("metadata", {}).get("name", "").endswith("-dashboard")


def check_objects(objects: list[dict[str, Any]], values: dict[str, Any]) -> tuple[list[tuple[str, list[str]]], dict[str, str], list[str]]:
    """Checks the alerts and the dashboard of one rendering: ([(what, problems)], metric names with
    where each is used, alert names)."""
    runbook = runbook_sections(RUNBOOK.read_text())
    results: list[tuple[str, list[str]]] = []
    used: dict[str, str] = {}
    alerts: list[str] = []
    rules = [o for o in objects if o.get("kind") == "PrometheusRule"]
    dashboards = [o for o in objects if is_dashboard(o)]
    expected = (int(values["metrics"]["prometheusRule"]["enabled"]), int(values["metrics"]["grafanaDashboard"]["enabled"]))
    if (len(rules), len(dashboards)) != expected:
        results.append(("PrometheusRule and dashboard rendered as enabled", [f"rendered {len(rules)} rule(s), {len(dashboards)} dashboard(s), expected {expected}"]))
    for obj in rules:
        problems, by_alert, names = check_rule(obj, values, runbook)
        results.append((f"PrometheusRule/{obj['metadata']['name']}: {len(names)} alerts parse and link their runbook", problems))
        used.update({metric: f"alert {alert}" for metric, alert in by_alert.items()})
        alerts += names
    for obj in dashboards:
        problems, metrics = check_dashboard_configmap(obj, values)
        results.append((f"ConfigMap/{obj['metadata']['name']}: dashboard and its queries parse", problems))
        for metric in metrics:
            used.setdefault(metric, "dashboard")
    return results, used, alerts


def full_rendering() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The objects and merged values of the rendering with every alert and the dashboard on."""
    chart = helm.Chart.load(str(CHART))
    rendered = chart.render(FULL_VALUES, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = [
        document
        for template, text in sorted(rendered.items())
        if template.endswith((".yaml", ".yml"))
        for document in yaml.safe_load_all(text)
        if document
    ]
    return objects, chart.merge_values(FULL_VALUES)


def listing(names: set[str]) -> str:
    """metrics-used.txt for `names`."""
    lines = [
        "# The metric names the chart's alerts (templates/prometheusrule.yaml) and",
        "# dashboard (dashboards/syncfleet.json) use, as PromQL parses them out of the",
        "# chart rendered with both on. Generated: python helm/checks/monitoring.py --write",
        "# (scripts/chart-check.sh fails while this file is stale). The fleet's test",
        "# scheduler/tests/it/chart_metrics.rs checks that a running scheduler or worker",
        "# exports each one; a second word names the exporter of a series that is not",
        "# the fleet's own, and that test skips it.",
    ]
    for name in sorted(names):
        lines.append(f"{name} {EXTERNAL[name]}" if name in EXTERNAL else name)
    return "\n".join(lines) + "\n"


def check_full(report: Any) -> None:
    """The checks on the rendering with everything on (see the module's doc)."""
    print(f"Alerts and dashboard, everything on (promql-parser {importlib.metadata.version('promql-parser')})")
    try:
        objects, values = full_rendering()
    except helm.HelmError as error:
        report.fail("renders with every alert and the dashboard", str(error).strip())
        return
    results, used, alerts = check_objects(objects, values)
    for what, problems in results:
        report.check(not problems, what, "; ".join(problems))

    schema = json.loads((CHART / "values.schema.json").read_text())
    enum = schema["properties"]["metrics"]["properties"]["prometheusRule"]["properties"]["disabled"]["items"]["enum"]
    report.check(
        sorted(alerts) == sorted(enum),
        f"the {len(alerts)} alerts are the ones `disabled` may name in values.schema.json",
        f"rendered {sorted(alerts)}, schema {sorted(enum)}",
    )
    sections = set(runbook_sections(RUNBOOK.read_text()))
    report.check(
        sections == {alert.lower() for alert in alerts},
        "docs/runbook.md has one section per alert and no other",
        f"sections {sorted(sections)}, alerts {sorted(a.lower() for a in alerts)}",
    )
    foreign = sorted(name for name in used if not name.startswith("syncfleet_") and name not in EXTERNAL)
    report.check(not foreign, "every series is the fleet's or a documented outside one", ", ".join(foreign))
    for name in sorted(used):
        print(f"         {name}  ({EXTERNAL.get(name, 'fleet')}; {used[name]})")
    current = LISTING.read_text() if LISTING.exists() else ""
    report.check(
        current == listing(set(used)),
        f"helm/checks/metrics-used.txt lists these {len(used)} metric names",
        "stale; run: /var/tmp/syncfleet-tools/venv/bin/python helm/checks/monitoring.py --write",
    )


def main() -> int:
    objects, values = full_rendering()
    results, used, _ = check_objects(objects, values)
    problems = [f"{what}: {problem}" for what, found in results for problem in found]
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    text = listing(set(used))
    if "--write" in sys.argv[1:]:
        LISTING.write_text(text)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
