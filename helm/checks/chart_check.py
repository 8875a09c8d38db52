"""Checks the Helm chart and the Dockerfile; run by scripts/chart-check.sh.

Steps, each printed with its outcome:

1. the Dockerfile parses (BuildKit's parser) and keeps its contract: known
   instructions, a rust builder, a debian-slim runtime running as uid 10001,
   the four binaries in /usr/local/bin;
2. `helm lint --strict` of the chart with its default values (plus the one
   value without a default, an encryption key) and each ci/*-values.yaml, at
   the oldest Kubernetes version the chart supports;
3. rendering with the same values; every built-in object is validated with
   kubernetes-validate (strict: unknown fields fail) against the oldest and
   the newest Kubernetes version it ships; custom resources (KEDA, Prometheus
   Operator) are handed to a Node script using kubernetes-models;
4. the chart's own promises on every rendering: the security context of each
   container, the worker's grace period, no secret in the ConfigMap, every
   `config` setting and the encryption keys reaching the worker and the api;
5. every values file of tests/bad-values is rejected when rendering (and by
   lint too when the schema rejects it), with the message its `# expect:`
   line names;
6. the schema declares every value of values.yaml, and the chart README's
   values table is the one values_table.py generates from them (every value,
   its default and its meaning);
7. the alerts (PrometheusRule) and the Grafana dashboard on every rendering
   that holds them, and with everything on: every PromQL expression parses,
   each alert has its runbook section, and helm/checks/metrics-used.txt lists
   the metric names they use (monitoring.py).

Exits 1 when any check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import dockerfile
import helm_python as helm
import kubernetes_validate
import kubernetes_validate.utils
import yaml

import monitoring
import values_table

RELEASE = "syncfleet"
NAMESPACE = "syncfleet"
SECRET_VARIABLES = {
    "SYNCFLEET_DATABASE_URL",
    "SYNCFLEET_AMQP_URL",
    "SYNCFLEET_REDIS_URL",
    "SYNCFLEET_SMTP_URL",
    "SYNCFLEET_ENCRYPTION_KEYS",
    "SYNCFLEET_MICROSOFT_CLIENT_SECRET",
    "SYNCFLEET_GOOGLE_CLIENT_SECRET",
    "SYNCFLEET_SALESFORCE_CLIENT_SECRET",
}
BINARIES = ["syncfleet-api", "syncfleet-scheduler", "syncfleet-worker", "syncfleet-loadtest"]
CUSTOM_GROUPS = ("keda.sh/", "monitoring.coreos.com/")
# The values the chart cannot default (rendering fails without them, see
# tests/bad-values/no-encryption-keys.yaml): added to the defaults for the
# "defaults" rendering. An example key (32 zero bytes), never a real one.
REQUIRED_VALUES: dict[str, Any] = {
    "secrets": {
        "encryption": {"values": {"SYNCFLEET_ENCRYPTION_KEYS": "1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}}
    }
}


class Report:
    """Counts passed and failed checks and prints one line each."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def ok(self, what: str) -> None:
        self.passed += 1
        print(f"  ok   {what}")

    def fail(self, what: str, why: str) -> None:
        self.failed += 1
        print(f"  FAIL {what}: {why}")

    def check(self, condition: bool, what: str, why: str) -> None:
        if condition:
            self.ok(what)
        else:
            self.fail(what, why)


def kube_floor(chart_dir: Path) -> str:
    """The oldest Kubernetes version of Chart.yaml's kubeVersion (">=1.27.0-0" gives "1.27.0")."""
    constraint = yaml.safe_load((chart_dir / "Chart.yaml").read_text())["kubeVersion"]
    match = re.fullmatch(r"\s*>=\s*v?(\d+\.\d+)(?:\.(\d+))?(?:-0)?\s*", constraint)
    if not match:
        raise SystemExit(f"Chart.yaml kubeVersion {constraint!r} is not of the form '>=X.Y.Z-0'")
    return f"{match.group(1)}.{match.group(2) or 0}"


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silences file descriptor 2 (Helm's Go logger prints every `fail` it skips while linting)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def lint(chart_dir: Path, values: dict[str, Any] | None, kube_version: str) -> dict[str, Any]:
    with quiet_stderr():
        return helm.lint(str(chart_dir), values, strict=True, kube_version=f"v{kube_version}")


# Dockerfile


def resolve_args(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), m.group(0)), text)


def check_dockerfile(path: Path, report: Report) -> None:
    print(f"Dockerfile ({path.name})")
    try:
        commands = dockerfile.parse_file(str(path))
    except dockerfile.GoParseError as error:
        report.fail("parses", str(error))
        return
    report.ok(f"parses ({len(commands)} instructions)")

    known = set(dockerfile.all_cmds())
    unknown = [f"line {c.start_line}: {c.cmd}" for c in commands if c.cmd.lower() not in known]
    report.check(not unknown, "only known instructions", ", ".join(unknown))

    # Stages, with the global ARG defaults substituted in FROM.
    global_args: dict[str, str] = {}
    stages: list[dict[str, Any]] = []
    for command in commands:
        if command.cmd.upper() == "ARG" and not stages:
            name, _, default = command.value[0].partition("=")
            global_args[name] = default
        elif command.cmd.upper() == "FROM":
            words = command.value
            image = resolve_args(words[0], global_args)
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append({"image": image, "name": name, "commands": []})
        elif stages:
            stages[-1]["commands"].append(command)
    report.check(len(stages) >= 2, "multi-stage", f"{len(stages)} stage(s)")
    if len(stages) < 2:
        return
    builder, runtime = stages[0], stages[-1]
    report.check(builder["image"] == "rust:1.95-bookworm", "builder is rust:1.95-bookworm", builder["image"])
    report.check(runtime["image"] == "debian:bookworm-slim", "runtime is debian:bookworm-slim", runtime["image"])

    build_runs = " ".join(" ".join(c.value) for c in builder["commands"] if c.cmd.upper() == "RUN")
    report.check(
        "cargo build --release --locked --bins" in re.sub(r"\s+", " ", build_runs),
        "builds the workspace with --release --locked --bins",
        build_runs[:120],
    )
    missing = [binary for binary in BINARIES if f"target/release/{binary}" not in build_runs]
    report.check(not missing, "builder collects the four binaries", f"missing {missing}")

    names = {stage["name"] for stage in stages if stage["name"]}
    copies = [c for c in runtime["commands"] if c.cmd.upper() == "COPY"]
    bad_from = [
        flag for c in copies for flag in c.flags if flag.startswith("--from=") and flag.split("=", 1)[1] not in names
    ]
    report.check(not bad_from, "COPY --from names a stage", ", ".join(bad_from))
    report.check(
        any(c.value[-1].rstrip("/") == "/usr/local/bin" and any(f.startswith("--from=") for f in c.flags) for c in copies),
        "runtime copies the binaries to /usr/local/bin",
        "no COPY --from=... /usr/local/bin",
    )
    runs = " ".join(" ".join(c.value) for c in runtime["commands"] if c.cmd.upper() == "RUN")
    installed = re.findall(r"apt-get install[^&;]*", runs)
    packages = {word for line in installed for word in line.split()[2:] if not word.startswith("-")}
    report.check(packages == {"ca-certificates"}, "runtime installs ca-certificates only", str(sorted(packages)))
    report.check(
        "--uid 10001" in runs and "--gid 10001" in runs, "creates user and group 10001", "no uid/gid 10001 in RUN"
    )
    users = [c.value[0] for c in runtime["commands"] if c.cmd.upper() == "USER"]
    report.check(
        bool(users) and users[-1].split(":")[0] == "10001", "runs as numeric user 10001", f"USER {users or 'missing'}"
    )
    entrypoints = [c for c in runtime["commands"] if c.cmd.upper() == "ENTRYPOINT"]
    report.check(not entrypoints, "no ENTRYPOINT (the chart sets command)", "ENTRYPOINT present")
    cmds = [c for c in runtime["commands"] if c.cmd.upper() == "CMD"]
    report.check(
        bool(cmds) and cmds[-1].json and cmds[-1].value[0] in BINARIES, "default CMD runs a binary (exec form)", "bad CMD"
    )


# Chart


def documents(rendered: dict[str, str]) -> Iterator[tuple[str, dict[str, Any]]]:
    for template, text in sorted(rendered.items()):
        if not template.endswith((".yaml", ".yml")):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                yield template, document


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in objects:
        if obj["kind"] in ("Deployment", "Job"):
            yield f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"]


def check_promises(label: str, objects: list[dict[str, Any]], values: dict[str, Any], report: Report) -> None:
    """The chart's own guarantees, on one rendering."""
    problems = []
    for name, spec in pod_specs(objects):
        pod = spec.get("securityContext", {})
        for container in spec["containers"]:
            context = {**pod, **container.get("securityContext", {})}
            expected = {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False,
            }
            for field, value in expected.items():
                if context.get(field) != value:
                    problems.append(f"{name}: {field} is {context.get(field)!r}")
            if "ALL" not in context.get("capabilities", {}).get("drop", []):
                problems.append(f"{name}: capabilities do not drop ALL")
            if context.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                problems.append(f"{name}: seccompProfile is not RuntimeDefault")
            if spec is not None and name.startswith("Deployment/"):
                probes = {probe: container.get(probe, {}).get("httpGet", {}).get("path") for probe in
                          ("livenessProbe", "readinessProbe")}
                if probes != {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}:
                    problems.append(f"{name}: probes are {probes}")
    report.check(not problems, f"{label}: pods run non-root, read-only, no capabilities; probes", "; ".join(problems))

    worker = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-worker"))
    spec = worker["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in spec["containers"][0].get("env", [])}
    grace = values["worker"]["shutdownGraceSeconds"]
    margin = values["worker"]["terminationGraceMarginSeconds"]
    report.check(
        env.get("SYNCFLEET_SHUTDOWN_GRACE") == f"{grace}s" and spec["terminationGracePeriodSeconds"] == grace + margin,
        f"{label}: worker grace {grace}s + {margin}s margin = terminationGracePeriodSeconds",
        f"env {env.get('SYNCFLEET_SHUTDOWN_GRACE')}, period {spec['terminationGracePeriodSeconds']}",
    )

    leaked = [
        f"{o['metadata']['name']}: {key}"
        for o in objects
        if o["kind"] == "ConfigMap"
        for key in o.get("data", {})
        if key in SECRET_VARIABLES
    ]
    report.check(not leaked, f"{label}: no secret variable in a ConfigMap", ", ".join(leaked))

    # Every non-secret setting reaches the worker and the api (the ConfigMap
    # through envFrom, or the component's own env), and so do the encryption
    # keys, from a Secret: the worker refuses to start without them.
    configmaps = {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}
    unreached = []
    for component in ("worker", "api"):
        deployment = next(
            o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith(f"-{component}")
        )
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        seen = {e["name"] for e in container.get("env", [])}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                seen |= set(configmaps.get(source["configMapRef"]["name"], {}))
        settings = {**values["config"], **(values[component].get("config") or {})}
        unreached += [f"{component}: {name}" for name, value in settings.items() if value is not None and name not in seen]
        keys = [e for e in container.get("env", []) if e["name"] == "SYNCFLEET_ENCRYPTION_KEYS"]
        if not keys or "secretKeyRef" not in keys[0].get("valueFrom", {}):
            unreached.append(f"{component}: SYNCFLEET_ENCRYPTION_KEYS from a Secret")
    report.check(
        not unreached,
        f"{label}: worker and api get every `config` setting and the encryption keys",
        ", ".join(unreached),
    )

    autoscalers = [o["kind"] for o in objects if o["kind"] in ("ScaledObject", "HorizontalPodAutoscaler")]
    replicas_set = "replicas" in worker["spec"]
    report.check(
        len(autoscalers) <= 1 and replicas_set == (not autoscalers),
        f"{label}: worker replicas owned by {autoscalers[0] if autoscalers else 'the Deployment'}",
        f"autoscalers {autoscalers}, replicas set: {replicas_set}",
    )
    prefix = values["config"]["SYNCFLEET_QUEUE_PREFIX"]
    for scaled in (o for o in objects if o["kind"] == "ScaledObject"):
        queues = sorted(t["metadata"]["queueName"] for t in scaled["spec"]["triggers"])
        report.check(
            queues == [f"{prefix}.sync", f"{prefix}.sync.priority"],
            f"{label}: KEDA triggers on {prefix}.sync and {prefix}.sync.priority",
            str(queues),
        )


def check_chart(chart_dir: Path, node_dir: Path, report: Report) -> None:
    floor = kube_floor(chart_dir)
    newest = kubernetes_validate.utils.latest_version()
    shipped = kubernetes_validate.utils.all_versions()
    if floor not in shipped:
        report.fail("kubeVersion", f"kubernetes-validate {kubernetes_validate.__version__} ships no schemas for {floor}")
        return
    chart = helm.Chart.load(str(chart_dir))
    defaults = chart.values
    variants: list[tuple[str, dict[str, Any] | None]] = [("defaults", REQUIRED_VALUES)]
    variants.append(("defaults, alerts and dashboard on", monitoring.FULL_VALUES))
    for path in sorted((chart_dir / "ci").glob("*-values.yaml")):
        variants.append((f"ci/{path.name}", helm.values_from_yaml(path.read_text())))

    custom: list[dict[str, Any]] = []
    for label, values in variants:
        print(f"Chart with {label}")
        lint_report = lint(chart_dir, values, floor)
        findings = [m for m in lint_report["messages"] if m["severity"] >= 2]
        report.check(
            not lint_report["errors"] and not findings,
            f"helm lint --strict (Kubernetes {floor})",
            "; ".join(f"{m['path']}: {m['error'].strip()}" for m in findings) or "; ".join(lint_report["errors"]),
        )
        try:
            rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        except helm.HelmError as error:
            report.fail("renders", str(error).strip())
            continue
        objects = [obj for _, obj in documents(rendered)]
        kinds = sorted({o["kind"] for o in objects})
        report.ok(f"renders {len(objects)} objects: {', '.join(kinds)}")

        invalid = []
        for template, obj in documents(rendered):
            if obj["apiVersion"].startswith(CUSTOM_GROUPS):
                custom.append({"source": label, "object": obj})
                continue
            for version in (floor, newest):
                try:
                    kubernetes_validate.validate(obj, version, strict=True)
                except kubernetes_validate.ValidationError as error:
                    where = "/".join(str(p) for p in error.path)
                    invalid.append(f"{template} {obj['kind']} (k8s {version}) at {where}: {error.message}")
                except kubernetes_validate.SchemaNotFoundError as error:
                    invalid.append(f"{template}: {error.message}")
        built_in = len(objects) - sum(1 for o in objects if o["apiVersion"].startswith(CUSTOM_GROUPS))
        report.check(
            not invalid,
            f"kubernetes-validate --strict: {built_in} built-in objects at {floor} and {newest}",
            "; ".join(invalid),
        )
        merged = chart.merge_values(values) if values else defaults
        check_promises(label, objects, merged, report)
        results, _, _ = monitoring.check_objects(objects, merged)
        for what, problems in results:
            report.check(not problems, f"{label}: {what}", "; ".join(problems))

    print(f"Custom resources ({len(custom)}, kubernetes-models)")
    if custom:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump(custom, handle)
        result = subprocess.run(
            ["node", str(node_dir / "validate-crds.mjs"), handle.name], capture_output=True, text=True
        )
        Path(handle.name).unlink()
        for line in result.stdout.splitlines():
            print(f"  {line}")
        if result.returncode == 0:
            report.passed += len(custom)
        else:
            report.failed += max(1, sum(1 for line in result.stdout.splitlines() if line.startswith("FAIL")))
            if result.stderr.strip():
                print(result.stderr.strip())
    kinds = {c["object"]["kind"] for c in custom}
    report.check(
        {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"} <= kinds,
        "the ci values render every custom resource kind",
        f"rendered only {sorted(kinds)}",
    )

    print("Bad values (tests/bad-values, each must be rejected)")
    bad_files = sorted((chart_dir / "tests" / "bad-values").glob("*.yaml"))
    report.check(bool(bad_files), "bad values files present", "none found")
    for path in bad_files:
        text = path.read_text()
        expected = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("# expect:")]
        values = helm.values_from_yaml(text)
        try:
            chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
            render_error = ""
        except helm.HelmError as error:
            render_error = str(error)
        # Helm's lint turns `fail` into a log line (its lint mode), so only
        # the schema's rejections are expected from lint; rendering, as an
        # install does, must reject every file.
        lint_error = " ".join(lint(chart_dir, values, floor)["errors"])
        schema_error = render_error.startswith("values don't meet the specifications")
        missing = [e for e in expected if e not in render_error]
        if not render_error:
            report.fail(path.name, "accepted")
        elif schema_error and not lint_error:
            report.fail(path.name, "rejected by the schema when rendering, but accepted by lint")
        elif not expected:
            report.fail(path.name, "has no '# expect:' line naming the error")
        elif missing:
            report.fail(path.name, f"rejected, but not with {missing}: {render_error.strip()}")
        else:
            by = "schema, in lint and render" if schema_error else "template, in render"
            report.ok(f"{path.name}: rejected by the {by} ({expected[0]})")


def check_readme(report: Report) -> None:
    print("Chart README and schema")
    missing = values_table.undeclared()
    report.check(not missing, "values.schema.json declares every value of values.yaml", ", ".join(missing))
    generated = values_table.table()
    current = values_table.readme_table((values_table.CHART / "README.md").read_text())
    rows = generated.count("\n") - 1
    report.check(
        current == generated,
        f"values table is current ({rows} values of values.yaml)",
        "differs from values.yaml; run: python helm/checks/values_table.py --write",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--node-dir", type=Path, required=True, help="folder holding validate-crds.mjs and node_modules")
    args = parser.parse_args()
    chart_dir = args.repo / "helm" / "syncfleet"
    report = Report()
    print(
        f"helm SDK {helm.helm_sdk_version()} (helm-python-sdk {helm.__version__}), "
        f"kubernetes-validate {kubernetes_validate.__version__} "
        f"(schemas {kubernetes_validate.utils.all_versions()[0]} to {kubernetes_validate.utils.latest_version()}), "
        f"chart kubeVersion floor {kube_floor(chart_dir)}"
    )
    check_dockerfile(args.repo / "Dockerfile", report)
    check_chart(chart_dir, args.node_dir, report)
    monitoring.check_full(report)
    check_readme(report)
    total = report.passed + report.failed
    if report.failed:
        print(f"chart-check: FAILED, {report.failed} of {total} checks")
    else:
        print(f"chart-check: OK, all {total} checks")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
