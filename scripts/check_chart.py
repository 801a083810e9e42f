#!/usr/bin/env python3
"""Checks the Helm chart in helm/agentwatch without a helm binary.

Static checks (need PyYAML and jsonschema):
  * Chart.yaml parses, is apiVersion v2, and its appVersion is Cargo.toml's version;
  * values.schema.json is valid draft-07; values.yaml and every ci/*-values.yaml
    (merged onto values.yaml the way Helm does) pass it; every file in
    helm/tests/bad-values/ fails it;
  * every value in values.yaml has a `# --` comment and a row in the chart README;
  * templates: balanced `{{ }}`, every block closed by an `end`, every
    `include "agentwatch.X"` defined in _helpers.tpl, every `.Values.a.b` path present
    in values.yaml;
  * the Dockerfile agrees with the chart (user 65532, port 9108, entrypoint, config path).
  * the Grafana dashboard (dashboards/agentwatch.json) parses and is a dashboard with a
    Prometheus data-source variable and namespace/job/pod variables; every metric named
    in a dashboard query or in templates/prometheusrule.yaml is registered in src/, used
    as its type allows (`_bucket` only on histograms, rate() on counters) and matched
    only on labels it has.

Rendering checks (with --render, or when helm-python-sdk is importable): Helm's own Go
engine (helm-python-sdk, Helm v4 as a shared library) lints and renders the chart with
each ci/ values file and checks what matters (workload kind, replicas = shards, shard
environment, no credential in any ConfigMap, probes, security context, selectors,
hooks); every file in helm/tests/render-fail/ must fail with the message in its
`# expect:` line; Helm's schema validation must reject every bad-values file. With
kubernetes-validate, every rendered object (except the ServiceMonitor CRD) is checked
against the Kubernetes OpenAPI schemas (strict: unknown fields are errors). With
--agentwatch BIN, the rendered ConfigMap plus each container's environment is fed to
`agentwatch check-config`, as the pod would run it.
The rendered PrometheusRule is checked against the CRD's structure and each chart alert
for `for`, `severity`, summary, description and a runbook link into
docs/troubleshooting.md (its anchor must exist once that file does).

With promtool (Debian package `prometheus`; --promtool requires it): `promtool check
rules` on every rendered PrometheusRule and on the dashboard's queries, and `promtool
test rules` on helm/tests/rules/*.yaml against the rules rendered from the defaults.

Exit status 0 when everything passed; the last line is "check_chart: N passed, M failed".
"""

from __future__ import annotations

import argparse
import base64
import copy
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

try:
    import jsonschema
    import yaml
except ImportError as e:  # pragma: no cover - environment problem
    sys.exit(f"check_chart: needs PyYAML and jsonschema ({e}); pip install PyYAML jsonschema")

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "agentwatch"
TESTS = ROOT / "helm" / "tests"
SECRET_DIR = "/var/run/secrets/agentwatch"
# Oldest supported (Chart.yaml kubeVersion) and the newest kubernetes-validate knows.
KUBE_VERSIONS = ["1.25", "latest"]
DASHBOARD = CHART / "dashboards" / "agentwatch.json"
RULE_TESTS = TESTS / "rules"
TROUBLESHOOTING = ROOT / "docs" / "troubleshooting.md"
# Labels Prometheus (Operator) attaches to every scraped series.
TARGET_LABELS = {"job", "namespace", "pod", "instance", "service", "endpoint", "container"}


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        if ok:
            self.passed += 1
        else:
            self.failed.append(name)
            print(f"FAIL {name}" + (f": {detail}" if detail else ""))
        return ok

    def summary(self) -> int:
        print(f"check_chart: {self.passed} passed, {len(self.failed)} failed")
        return 1 if self.failed else 0


def load_yaml(path: Path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def merge(defaults, override):
    """Helm's coalescing: maps merge recursively, null deletes, anything else replaces."""
    if not isinstance(defaults, dict) or not isinstance(override, dict):
        return copy.deepcopy(override)
    out = copy.deepcopy(defaults)
    for k, v in override.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def expectation(path: Path) -> str:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    m = re.match(r"#\s*expect:\s*(.*)", first)
    return m.group(1).strip() if m else ""


# ---------------------------------------------------------------- static checks


def check_chart_yaml(r: Report) -> None:
    chart = load_yaml(CHART / "Chart.yaml")
    r.check("Chart.yaml apiVersion is v2", chart.get("apiVersion") == "v2", str(chart.get("apiVersion")))
    r.check("Chart.yaml name is agentwatch", chart.get("name") == "agentwatch")
    r.check(
        "Chart.yaml version is SemVer",
        bool(re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", str(chart.get("version", "")))),
    )
    with open(ROOT / "Cargo.toml", "rb") as f:
        cargo_version = tomllib.load(f)["package"]["version"]
    r.check(
        "Chart.yaml appVersion equals Cargo.toml version",
        str(chart.get("appVersion")) == cargo_version,
        f"appVersion {chart.get('appVersion')!r}, Cargo.toml {cargo_version!r}",
    )


def check_dockerfile(r: Report, values: dict) -> None:
    """The image and the chart agree on user, port, binary and config path."""
    path = ROOT / "Dockerfile"
    if not r.check("Dockerfile exists", path.is_file()):
        return
    text = path.read_text(encoding="utf-8")
    final = text[text.rfind("\nFROM ") :]
    uid = values["securityContext"].get("runAsUser")
    r.check(
        f"Dockerfile runs as the chart's runAsUser {uid}",
        re.search(rf"^USER {uid}(:\d+)?$", final, re.M) is not None,
    )
    r.check("Dockerfile exposes 9108", re.search(r"^EXPOSE 9108$", final, re.M) is not None)
    r.check("Dockerfile ENTRYPOINT is agentwatch", '\nENTRYPOINT ["agentwatch"]' in final)
    r.check(
        "Dockerfile CMD runs the config the chart mounts",
        'CMD ["run", "--config", "/etc/agentwatch/agentwatch.toml"]' in final,
    )
    r.check("Dockerfile builds with --locked", "cargo build --release --locked" in text)
    ignore = (
        (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
        if (ROOT / ".dockerignore").is_file()
        else []
    )
    r.check(
        ".dockerignore keeps target/ and .git/ out of the build context",
        "target/" in ignore and ".git/" in ignore,
    )


def schema_errors(validator, values) -> list[str]:
    return [
        f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
        for e in validator.iter_errors(values)
    ]


def check_schema(r: Report, schema: dict, values: dict) -> None:
    try:
        jsonschema.Draft7Validator.check_schema(schema)
        r.check("values.schema.json is a valid draft-07 schema", True)
    except jsonschema.SchemaError as e:
        r.check("values.schema.json is a valid draft-07 schema", False, e.message)
        return
    v = jsonschema.Draft7Validator(schema)
    errs = schema_errors(v, values)
    r.check("values.yaml passes values.schema.json", not errs, "; ".join(errs))
    for f in sorted((CHART / "ci").glob("*.yaml")):
        errs = schema_errors(v, merge(values, load_yaml(f) or {}))
        r.check(f"ci/{f.name} passes values.schema.json", not errs, "; ".join(errs))
    bad = sorted((TESTS / "bad-values").glob("*.yaml"))
    r.check("helm/tests/bad-values has cases", len(bad) >= 2)
    for f in bad:
        errs = schema_errors(v, merge(values, load_yaml(f) or {}))
        r.check(
            f"bad-values/{f.name} is rejected by values.schema.json",
            bool(errs),
            f"accepted, expected {expectation(f)}",
        )


def documented_leaves(values, node: dict, root: dict, prefix: str = "") -> list[str]:
    """Value paths a user sets: recurse into maps the chart structures
    (additionalProperties: false), stop at free-form objects, lists and scalars."""
    out = []
    for key, val in values.items():
        path = f"{prefix}{key}"
        sub = resolve(node.get("properties", {}).get(key, {}), root)
        if isinstance(val, dict) and val and sub.get("additionalProperties") is False and "properties" in sub:
            out += documented_leaves(val, sub, root, path + ".")
        else:
            out.append(path)
    return out


def resolve(node: dict, schema_root: dict) -> dict:
    while "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/definitions/"), ref
        node = schema_root["definitions"][ref.split("/")[-1]]
    if "allOf" in node:
        merged: dict = {}
        for part in node["allOf"]:
            merged.update(resolve(part, schema_root))
        node = merged
    return node


def values_key_lines(text: str) -> dict[str, int]:
    """Dotted path of every mapping key in values.yaml -> its line index. Skips block
    scalars and list contents (their keys are data, not chart values)."""
    lines = text.splitlines()
    stack: list[tuple[int, str]] = []
    out: dict[str, int] = {}
    skip_indent: int | None = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip(" "))
        if skip_indent is not None:
            if indent > skip_indent:
                continue
            skip_indent = None
        m = re.match(r"^(\s*)([A-Za-z0-9_.-]+):(\s|$)", line)
        if not m:
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = m.group(2)
        path = ".".join([p for _, p in stack] + [key])
        out[path] = i
        rest = line[m.end() :].strip()
        if rest.startswith(("|", ">")):
            skip_indent = indent
        elif rest == "" and i + 1 < len(lines) and lines[i + 1].lstrip().startswith("- "):
            skip_indent = indent
        stack.append((indent, key))
    return out


def check_values_documented(r: Report, values: dict, schema: dict) -> None:
    text = (CHART / "values.yaml").read_text(encoding="utf-8")
    lines = text.splitlines()
    keys = values_key_lines(text)
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Values\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    table = section.group(1) if section else ""
    table_paths = set(re.findall(r"^\|\s*`([^`]+)`\s*\|", table, re.M))
    r.check("the chart README has a '## Values' table", bool(table_paths))
    leaves = documented_leaves(values, schema, schema)
    undocumented, missing_rows = [], []
    for path in leaves:
        i = keys.get(path)
        j = (i or 0) - 1
        while j >= 0 and lines[j].strip() == "":
            j -= 1
        # The description is the `# --` comment block right above the key.
        block = []
        while j >= 0 and lines[j].lstrip().startswith("#"):
            block.append(lines[j].strip())
            j -= 1
        if i is None or not any(b.startswith("# --") for b in block):
            undocumented.append(path)
        if path not in table_paths:
            missing_rows.append(path)
    r.check("every value in values.yaml has a '# --' comment", not undocumented, ", ".join(undocumented))
    r.check("every value has a row in helm/agentwatch/README.md", not missing_rows, ", ".join(missing_rows))
    stale = sorted(p for p in table_paths if p not in leaves)
    r.check("the README values table lists no value that does not exist", not stale, ", ".join(stale))


ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.S)
BLOCK_OPENERS = ("if ", "range ", "with ", "define ", "block ")


def check_templates(r: Report, values: dict) -> None:
    helpers = (CHART / "templates" / "_helpers.tpl").read_text(encoding="utf-8")
    defined = set(re.findall(r'\{\{-?\s*define\s+"([^"]+)"', helpers))
    for f in sorted((CHART / "templates").iterdir()):
        text = f.read_text(encoding="utf-8")
        name = f"templates/{f.name}"
        opens, closes = text.count("{{"), text.count("}}")
        r.check(f"{name}: balanced {{{{ }}}}", opens == closes, f"{opens} '{{{{' vs {closes} '}}}}'")
        depth, problems = 0, []
        for m in ACTION.finditer(text):
            body = m.group(1)
            if body.startswith("/*"):
                continue
            word = body + " "
            if word.startswith(BLOCK_OPENERS):
                depth += 1
            elif body == "end":
                depth -= 1
                if depth < 0:
                    problems.append(f"'end' without a block at offset {m.start()}")
                    depth = 0
        if depth:
            problems.append(f"{depth} block(s) not closed by 'end'")
        r.check(f"{name}: every if/range/with/define closed by end", not problems, "; ".join(problems))
        used = set(re.findall(r'(?:include|template)\s+"([^"]+)"', text))
        undefined = sorted(u for u in used if u not in defined)
        r.check(f"{name}: every include is defined in _helpers.tpl", not undefined, ", ".join(undefined))
        foreign = sorted(u for u in used if not u.startswith("agentwatch."))
        r.check(f"{name}: included templates are agentwatch.*", not foreign, ", ".join(foreign))
        missing = []
        for path in sorted(set(re.findall(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", text))):
            node = values
            for part in path.strip(".").split("."):
                if isinstance(node, dict) and part in node:
                    node = node[part]
                else:
                    missing.append(".Values" + path)
                    break
        r.check(f"{name}: every .Values path exists in values.yaml", not missing, ", ".join(missing))


# ---------------------------------------------------------------- dashboard and alerts


class Metric:
    def __init__(self, name: str, kind: str | None, labels: set[str] | None) -> None:
        self.name, self.kind, self.labels = name, kind, labels


METRIC_DEF = re.compile(
    r"\b(IntCounterVec|IntCounter|CounterVec|Counter|IntGaugeVec|IntGauge|GaugeVec|Gauge"
    r"|HistogramVec|Histogram)"
    r"::(?:new|with_opts)\(\s*(?:(?:Opts|HistogramOpts)::new\(\s*)?\"(agentwatch_[a-z0-9_]+)\""
)
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_catalogue() -> dict[str, Metric]:
    """Every metric defined in src/: name -> type and label names, read from the
    prometheus crate's constructors. A quoted "agentwatch_*" literal that is not such a
    definition still counts as a name (type and labels unknown)."""
    out: dict[str, Metric] = {}
    literals: set[str] = set()
    for f in sorted((ROOT / "src").rglob("*.rs")):
        text = f.read_text(encoding="utf-8")
        literals |= set(re.findall(r'"(agentwatch_[a-z0-9_]+)"', text))
        defs = list(METRIC_DEF.finditer(text))
        for i, m in enumerate(defs):
            ctor, name = m.group(1), m.group(2)
            kind = "counter" if "Counter" in ctor else "histogram" if "Histogram" in ctor else "gauge"
            labels: set[str] | None = set()
            if ctor.endswith("Vec"):
                end = defs[i + 1].start() if i + 1 < len(defs) else len(text)
                body = text[m.end() : end]
                body = body[: body.find(".expect(")] if ".expect(" in body else body
                lm = re.search(r"&\[([^\]]*)\]", body)
                labels = set(re.findall(r'"([a-z_][a-z0-9_]*)"', lm.group(1))) if lm else None
            out[name] = Metric(name, kind, labels)
    for name in literals - set(out):
        if not any(name == n + s for n in out for s in HISTOGRAM_SUFFIXES):
            out[name] = Metric(name, None, None)
    return out


def source_literals() -> set[str]:
    """Every string literal in src/ (label values come from the code)."""
    out: set[str] = set()
    for f in (ROOT / "src").rglob("*.rs"):
        out |= set(re.findall(r'"((?:[^"\\]|\\.)*)"', f.read_text(encoding="utf-8")))
    return out


STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
NAME = re.compile(r"(?<![A-Za-z0-9_:])(agentwatch_[a-z0-9_]+)")
MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
COUNTER_FUNCS = ("rate", "irate", "increase", "resets")


def blank_strings(expr: str) -> str:
    """The expression with every string literal's content blanked, offsets unchanged."""
    return STRING.sub(lambda m: '"' + " " * (len(m.group(0)) - 2) + '"', expr)
GAUGE_FUNCS = ("deriv", "delta", "idelta", "predict_linear")


def promql_problems(
    expr: str, metrics: dict[str, Metric], literals: set[str], extra_labels: set[str] = frozenset()
) -> list[str]:
    """What is wrong with the agentwatch metrics an expression uses: unknown names,
    histogram suffixes on non-histograms, rate() over gauges, deriv() over counters,
    matchers or by/without labels the metrics do not have, label values the code never
    produces."""
    problems: list[str] = []
    allowed_common = TARGET_LABELS | set(extra_labels)
    bare = blank_strings(expr)
    used: list[tuple[Metric, str]] = []  # (metric, suffix)
    for m in NAME.finditer(bare):
        name = m.group(1)
        metric, suffix = metrics.get(name), ""
        if metric is None:
            for s in HISTOGRAM_SUFFIXES:
                base = metrics.get(name[: -len(s)]) if name.endswith(s) else None
                if base is not None:
                    metric, suffix = base, s
                    break
        if metric is None:
            problems.append(f"{name} is not a metric agentwatch registers in src/")
            continue
        if metric.kind == "histogram" and not suffix:
            problems.append(f"{name} is a histogram: use {name}_bucket, _sum or _count")
        if suffix and metric.kind not in ("histogram", None):
            problems.append(f"{name}: {metric.name} is a {metric.kind}, not a histogram")
        used.append((metric, suffix))
        # The function the series is handed to directly, if any.
        before = bare[: m.start()].rstrip()
        fm = re.search(r"([a-z_]+)\s*\(\s*$", before)
        func = fm.group(1) if fm else ""
        if func in COUNTER_FUNCS and metric.kind == "gauge":
            problems.append(f"{func}() over {name}, a gauge")
        if func in GAUGE_FUNCS and (metric.kind == "counter" or suffix):
            problems.append(f"{func}() over {name}, a counter")
        # Its matchers (in the original text, where the values are).
        rest = expr[m.end() :]
        sel = re.match(r"\s*\{((?:[^{}\"]|\"(?:[^\"\\]|\\.)*\")*)\}", rest)
        if sel and metric.labels is not None:
            own = metric.labels | ({"le"} if suffix == "_bucket" else set())
            for label, op, value in MATCHER.findall(sel.group(1)):
                if label not in own and label not in allowed_common:
                    problems.append(f"{name} has no label {label!r} (it has {sorted(own) or 'none'})")
                elif label in metric.labels and op in ("=", "!=") and "$" not in value:
                    if value not in literals:
                        problems.append(
                            f'{name}{{{label}{op}"{value}"}}: agentwatch never sets {label}="{value}"'
                        )
    known = set(allowed_common) | {"le"}
    for metric, _ in used:
        known |= metric.labels or set()
    unknown_metric_labels = any(metric.labels is None for metric, _ in used)
    for clause in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", bare):
        for label in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", clause):
            if label not in known and not unknown_metric_labels:
                problems.append(f"aggregates or matches on {label!r}, a label none of its metrics has")
    return problems


def walk_panels(panels: list) -> list[dict]:
    out = []
    for p in panels or []:
        out.append(p)
        out += walk_panels(p.get("panels", []))
    return out


def dashboard_queries(dash: dict) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and query variable."""
    out = []
    for p in walk_panels(dash.get("panels", [])):
        for tgt in p.get("targets", []) or []:
            if tgt.get("expr"):
                out.append((f"panel '{p.get('title')}' {tgt.get('refId')}", tgt["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else q or ""
        m = re.fullmatch(
            r"\s*(?:label_values|query_result)\((.*?)(?:,\s*[A-Za-z_][A-Za-z0-9_]*)?\)\s*", q, re.S
        )
        out.append((f"variable ${v.get('name')}", m.group(1) if m else q))
    return out


# Values Grafana substitutes, so that promtool can parse the queries.
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$sweep_interval": "10"}


def grafana_to_promql(expr: str) -> str:
    for k, v in GRAFANA_VARS.items():
        expr = expr.replace(k, v)
    return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", ".*", expr)


def check_dashboard(r: Report, metrics: dict[str, Metric], literals: set[str]) -> dict | None:
    if not r.check("dashboards/agentwatch.json exists", DASHBOARD.is_file()):
        return None
    try:
        dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
        r.check("dashboards/agentwatch.json parses", True)
    except json.JSONDecodeError as e:
        r.check("dashboards/agentwatch.json parses", False, str(e))
        return None
    version = dash.get("schemaVersion", 0)
    r.check("dashboard: schemaVersion >= 36", isinstance(version, int) and version >= 36, str(version))
    r.check("dashboard: has a uid and a title", bool(dash.get("uid")) and bool(dash.get("title")))
    r.check("dashboard: no __inputs (the sidecar does not resolve them)", "__inputs" not in dash)
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource", {})
    r.check(
        "dashboard: ${datasource} is a Prometheus data-source variable",
        ds.get("type") == "datasource" and ds.get("query") == "prometheus",
    )
    for name in ("namespace", "job", "pod"):
        r.check(f"dashboard: query variable ${name}", variables.get(name, {}).get("type") == "query")
    panels = walk_panels(dash.get("panels", []))
    ids = [p.get("id") for p in panels]
    r.check("dashboard: panel ids are unique", len(ids) == len(set(ids)), str(ids))
    rows = [p.get("title") for p in panels if p.get("type") == "row"]
    for want in ("Overview", "Sweeps", "Upstreams", "Events / Kafka", "Inventory"):
        r.check(f"dashboard: row '{want}'", want in rows, str(rows))
    wrong_ds = [
        p.get("title")
        for p in panels
        if p.get("type") != "row"
        and (
            p.get("datasource", {}).get("uid") != "${datasource}"
            or any(t.get("datasource", {}).get("uid") != "${datasource}" for t in p.get("targets", []))
        )
    ]
    r.check(
        "dashboard: every panel and query uses ${datasource}", not wrong_ds, ", ".join(map(str, wrong_ds))
    )
    no_query = [p.get("title") for p in panels if p.get("type") != "row" and not p.get("targets")]
    r.check("dashboard: every panel has a query", not no_query, ", ".join(map(str, no_query)))
    queries = dashboard_queries(dash)
    defined = set(variables) | {k.lstrip("$") for k in GRAFANA_VARS}
    undefined = sorted(
        {
            f"{where}: ${v}"
            for where, q in queries
            for v in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", q)
            if v not in defined
        }
    )
    r.check("dashboard: every $variable is defined", not undefined, "; ".join(undefined))
    bad = [f"{where}: {p}" for where, q in queries for p in promql_problems(q, metrics, literals)]
    r.check(
        f"dashboard: the {len(queries)} queries use agentwatch's metrics as registered in src/",
        not bad,
        "; ".join(bad),
    )
    no_selector = [
        where
        for where, q in queries
        if not where.startswith("variable")
        and any(
            not re.match(r'\s*\{[^}]*namespace=~"\$namespace"', q[m.end() :])
            for m in NAME.finditer(blank_strings(q))
        )
    ]
    r.check(
        "dashboard: every series is filtered by $namespace/$job/$pod", not no_selector, ", ".join(no_selector)
    )
    shown = {m for _, q in queries for m in NAME.findall(q)}
    shown |= {n[: -len(s)] for n in shown for s in HISTOGRAM_SUFFIXES if n.endswith(s)}
    missing = sorted(n for n, m in metrics.items() if m.kind and n not in shown)
    if missing:
        print(f"note: metrics registered in src/ but not on the dashboard: {', '.join(missing)}")
    return dash


def check_rules_template(r: Report, metrics: dict[str, Metric]) -> None:
    """Metric names in templates/prometheusrule.yaml, before rendering (Go template
    syntax keeps it from being PromQL yet)."""
    path = CHART / "templates" / "prometheusrule.yaml"
    if not r.check("templates/prometheusrule.yaml exists", path.is_file()):
        return
    text = path.read_text(encoding="utf-8")
    names = set(NAME.findall(text))
    unknown = sorted(
        n
        for n in names
        if n not in metrics and not any(n.endswith(s) and n[: -len(s)] in metrics for s in HISTOGRAM_SUFFIXES)
    )
    r.check(
        f"templates/prometheusrule.yaml: its {len(names)} metric names are registered in src/",
        bool(names) and not unknown,
        ", ".join(unknown),
    )


def github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub (and GitLab) give the headings, plus explicit <a id/name>."""
    out: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m and not in_code:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
        out |= set(re.findall(r'<a\s+(?:id|name)="([^"]+)"', line))
    return out


# The PrometheusRule CRD (monitoring.coreos.com/v1), the parts the chart writes.
_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_RECORD_NAME = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"
PROMETHEUS_RULE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
                "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                "labels": _STRING_MAP,
                "annotations": _STRING_MAP,
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": _DURATION,
                            "query_offset": _DURATION,
                            "limit": {"type": "integer"},
                            "partial_response_strategy": {"type": "string"},
                            "labels": _STRING_MAP,
                            "rules": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["expr"],
                                    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                    "properties": {
                                        "alert": {"type": "string", "minLength": 1},
                                        "record": {"type": "string", "pattern": _RECORD_NAME},
                                        "expr": {"type": ["string", "integer"]},
                                        "for": _DURATION,
                                        "keep_firing_for": _DURATION,
                                        "labels": _STRING_MAP,
                                        "annotations": _STRING_MAP,
                                    },
                                },
                            },
                        },
                    },
                }
            },
        },
    },
}
CHART_ALERTS = [
    "AgentwatchDown",
    "AgentwatchNotReady",
    "AgentwatchTaskDown",
    "AgentwatchSweepsFailing",
    "AgentwatchSweepSlow",
    "AgentwatchUpstreamErrors",
    "AgentwatchStaleAgents",
    "AgentwatchKafkaBacklog",
    "AgentwatchKafkaDeliveryErrors",
    "AgentwatchProducerRestarts",
    "AgentwatchDeleteFlood",
    "AgentwatchInventoryRefreshFailing",
    "AgentwatchAgentsDown",
    "AgentwatchShardMissing",
]


def config_interval_seconds(config: str) -> int:
    """poll.interval of a TOML config, the way the chart's sweepIntervalSeconds reads it."""
    try:
        raw = tomllib.loads(config).get("poll", {}).get("interval")
    except tomllib.TOMLDecodeError:
        raw = None
    m = re.fullmatch(r"([0-9]+)(ms|s|m|h)", raw or "")
    if not m:
        return 10
    n, unit = int(m.group(1)), m.group(2)
    return {"ms": -(-n // 1000), "s": n, "m": n * 60, "h": n * 3600}[unit]


def selector_labels(selector: str) -> set[str]:
    return {label for label, _, _ in MATCHER.findall(selector)}


def check_prometheus_rule(
    r: Report, tag: str, rule: dict, merged: dict, metrics: dict[str, Metric], literals: set[str]
) -> None:
    rules_cfg = merged["prometheus"]["rules"]
    errs = schema_errors(jsonschema.Draft7Validator(PROMETHEUS_RULE_SCHEMA), rule)
    r.check(f"{tag}: PrometheusRule has the CRD's structure", not errs, "; ".join(errs))
    if errs:
        return
    want_ns = rules_cfg["namespace"] or "bk"
    r.check(f"{tag}: PrometheusRule namespace", rule["metadata"].get("namespace") == want_ns)
    r.check(
        f"{tag}: PrometheusRule carries additionalLabels",
        subset(rules_cfg["additionalLabels"], rule["metadata"].get("labels", {})),
    )
    all_rules = [x for g in rule["spec"]["groups"] for x in g["rules"]]
    alerts = {x["alert"]: x for x in all_rules if "alert" in x}
    expected = [
        a
        for a in CHART_ALERTS
        if not rules_cfg["disabled"].get(a)
        and (a != "AgentwatchShardMissing" or merged["sharding"]["enabled"])
    ]
    chart_alerts = [a for a in alerts if a in CHART_ALERTS]
    r.check(
        f"{tag}: PrometheusRule has the chart's alerts, less the disabled ones",
        sorted(chart_alerts) == sorted(expected),
        f"has {sorted(chart_alerts)}, expected {sorted(expected)}",
    )
    r.check(
        f"{tag}: extraRules appended",
        all(x in all_rules for x in rules_cfg["extraRules"]),
    )
    anchors = None
    if TROUBLESHOOTING.is_file():
        anchors = github_anchors(TROUBLESHOOTING.read_text(encoding="utf-8"))
    problems = []
    for name in chart_alerts:
        a = alerts[name]
        ann, labels = a.get("annotations", {}), a.get("labels", {})
        override = rules_cfg["overrides"].get(name, {})
        if not a.get("for"):
            problems.append(f"{name}: no for")
        if labels.get("severity") not in ("critical", "warning", "info"):
            problems.append(f"{name}: severity {labels.get('severity')!r}")
        if "severity" in override and labels.get("severity") != override["severity"]:
            problems.append(f"{name}: severity override not applied")
        if "for" in override and a.get("for") != override["for"]:
            problems.append(f"{name}: for override not applied")
        if not subset(rules_cfg["alertLabels"], labels):
            problems.append(f"{name}: alertLabels missing")
        for key in ("summary", "description", "runbook_url"):
            if not str(ann.get(key, "")).strip():
                problems.append(f"{name}: no {key}")
        url = ann.get("runbook_url", "")
        base, _, anchor = url.partition("#")
        if base != rules_cfg["runbookBaseUrl"] or not base.endswith("docs/troubleshooting.md") or not anchor:
            problems.append(f"{name}: runbook_url {url!r} is not <runbookBaseUrl>#<section>")
        elif anchors is not None and anchor not in anchors:
            problems.append(f"{name}: docs/troubleshooting.md has no section #{anchor}")
        for text in (ann.get("summary", ""), ann.get("description", "")):
            for n in NAME.findall(text):
                if n not in metrics:
                    problems.append(f"{name}: annotation names {n}, which src/ does not register")
    r.check(
        f"{tag}: every chart alert has for, severity, summary, description, runbook_url",
        not problems,
        "; ".join(problems),
    )
    if anchors is None:
        print(f"note: {TROUBLESHOOTING.relative_to(ROOT)} does not exist yet; runbook anchors not checked")
    extra = selector_labels(rules_cfg["selector"])
    bad = [
        f"{x.get('alert') or x.get('record')}: {p}"
        for x in all_rules
        if x not in rules_cfg["extraRules"]
        for p in promql_problems(str(x["expr"]), metrics, literals, extra)
    ]
    r.check(
        f"{tag}: alert expressions use agentwatch's metrics as registered in src/", not bad, "; ".join(bad)
    )
    interval = rules_cfg["sweepIntervalSeconds"] or config_interval_seconds(merged["config"])
    if "AgentwatchSweepsFailing" in alerts:
        want = rules_cfg["sweepsFailingIntervals"] * interval
        r.check(
            f"{tag}: AgentwatchSweepsFailing threshold is "
            f"{rules_cfg['sweepsFailingIntervals']} x {interval}s",
            re.search(rf"\)\s*>\s*{want}\s", alerts["AgentwatchSweepsFailing"]["expr"]) is not None,
            alerts["AgentwatchSweepsFailing"]["expr"],
        )
    if not rules_cfg["selector"]:
        job = merged["prometheus"]["monitor"]["jobLabel"]
        want_sel = 'namespace="bk"' if job else 'job="agentwatch",namespace="bk"'
        r.check(
            f"{tag}: alerts select the release's targets ({want_sel})",
            all(want_sel in str(x["expr"]) for x in alerts.values() if x["alert"] in CHART_ALERTS),
        )


def promtool_check(r: Report, name: str, groups: list[dict], promtool: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "rules.yaml"
        f.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False), encoding="utf-8")
        p = subprocess.run([promtool, "check", "rules", str(f)], capture_output=True, text=True, timeout=60)
        r.check(f"{name}: promtool check rules", p.returncode == 0, (p.stdout + p.stderr).strip()[-1500:])


def promtool_dashboard(r: Report, dash: dict, promtool: str) -> None:
    """The dashboard's queries, Grafana's variables substituted, as recording rules:
    promtool parses every one of them."""
    rules = [
        {"record": f"dashboard_query_{i}", "expr": grafana_to_promql(q)}
        for i, (_, q) in enumerate(dashboard_queries(dash))
    ]
    promtool_check(r, f"dashboard ({len(rules)} queries)", [{"name": "dashboard", "rules": rules}], promtool)


def promtool_unit_tests(r: Report, rd, promtool: str) -> None:
    """helm/tests/rules/*.yaml against the rules rendered from the chart's defaults with
    sharding on (release aw in namespace bk), so every alert is there."""
    tests = sorted(RULE_TESTS.glob("*.yaml"))
    r.check("helm/tests/rules has promtool unit tests", bool(tests))
    values = {
        "secret": {"appSecret": "x"},
        "sharding": {"enabled": True},
        "prometheus": {"rules": {"enabled": True}},
    }
    rules = by_kind(rd.render(values), "PrometheusRule")
    if not r.check("the defaults render a PrometheusRule for the unit tests", len(rules) == 1):
        return
    with tempfile.TemporaryDirectory() as tmp:
        rule_file = Path(tmp) / "agentwatch-rules.yaml"
        groups = rules[0]["spec"]["groups"]
        rule_file.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False), encoding="utf-8")
        tested: set[str] = set()
        for f in tests:
            doc = load_yaml(f)
            doc["rule_files"] = [str(rule_file)]
            for case in doc.get("tests", []):
                tested |= {a.get("alertname") for a in case.get("alert_rule_test", [])}
            test_file = Path(tmp) / f.name
            test_file.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
            p = subprocess.run(
                [promtool, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=120
            )
            out = (p.stdout + p.stderr).strip()[-3000:]
            r.check(f"rules/{f.name}: promtool test rules", p.returncode == 0, out)
        untested = sorted(set(CHART_ALERTS) - tested)
        r.check("every chart alert has a promtool unit test", not untested, ", ".join(untested))


# ---------------------------------------------------------------- rendering checks


class RenderedYamlError(Exception):
    pass


def docs(manifests: dict[str, str]) -> list[dict]:
    """The rendered objects (NOTES.txt is text, not a manifest)."""
    out = []
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        try:
            out += [d for d in yaml.safe_load_all(text) if isinstance(d, dict) and d]
        except yaml.YAMLError as e:
            raise RenderedYamlError(f"{path} is not valid YAML: {e}") from e
    return out


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o.get("kind") == kind]


def env_map(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def subset(small: dict, big: dict) -> bool:
    return all(big.get(k) == v for k, v in small.items())


class Renderer:
    def __init__(self, helm) -> None:
        self.helm = helm
        self.chart = helm.Chart.load(str(CHART))

    def render(self, values: dict) -> list[dict]:
        return docs(self.chart.render(values, name="aw", namespace="bk", is_install=True))


def check_rendered_set(
    r: Report, tag: str, values: dict, objs: list[dict], kv, agentwatch: str | None
) -> None:
    merged = merge(DEFAULTS, values)
    sharded = merged["sharding"]["enabled"]
    shards = merged["sharding"]["shards"]
    deps, stss = by_kind(objs, "Deployment"), by_kind(objs, "StatefulSet")
    if sharded:
        ok = r.check(f"{tag}: one StatefulSet, no Deployment", len(stss) == 1 and not deps)
        workload = stss[0] if ok else None
    else:
        ok = r.check(f"{tag}: one Deployment, no StatefulSet", len(deps) == 1 and not stss)
        workload = deps[0] if ok else None
    if workload is None:
        return
    spec = workload["spec"]
    pod = spec["template"]["spec"]
    c = pod["containers"][0]
    env = env_map(c)
    services = by_kind(objs, "Service")
    metrics_svc = [
        s for s in services if s["metadata"]["labels"].get("app.kubernetes.io/component") == "metrics"
    ]
    headless = [s for s in services if s["spec"].get("clusterIP") == "None"]

    if sharded:
        r.check(
            f"{tag}: replicas = sharding.shards",
            spec["replicas"] == shards,
            f"{spec['replicas']} != {shards}",
        )
        r.check(
            f"{tag}: serviceName is the headless Service",
            len(headless) == 1 and spec.get("serviceName") == headless[0]["metadata"]["name"],
        )
        r.check(
            f"{tag}: POD_NAME from metadata.name",
            env.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            == "metadata.name",
        )
        r.check(
            f"{tag}: shard.from_pod_name = true",
            env.get("AGENTWATCH__SHARD__FROM_POD_NAME", {}).get("value") == "true",
        )
        r.check(
            f"{tag}: shard.total = shards",
            env.get("AGENTWATCH__SHARD__TOTAL", {}).get("value") == str(shards),
            str(env.get("AGENTWATCH__SHARD__TOTAL")),
        )
    else:
        r.check(f"{tag}: one replica", spec["replicas"] == 1)
        if "strategy" not in values:
            r.check(f"{tag}: Recreate strategy by default", spec["strategy"] == {"type": "Recreate"})
        r.check(f"{tag}: Deployment strategy from values", spec["strategy"] == merged["strategy"])
        r.check(f"{tag}: shard.total = 1", env.get("AGENTWATCH__SHARD__TOTAL", {}).get("value") == "1")
        r.check(f"{tag}: no headless Service", not headless)
    r.check(
        f"{tag}: http.listen = 0.0.0.0:9108",
        env.get("AGENTWATCH__HTTP__LISTEN", {}).get("value") == "0.0.0.0:9108",
    )
    r.check(
        f"{tag}: args run --config the mounted file",
        c["args"][:3] == ["run", "--config", "/etc/agentwatch/agentwatch.toml"],
        str(c["args"]),
    )
    r.check(
        f"{tag}: container port 9108 named http",
        {"name": "http", "containerPort": 9108, "protocol": "TCP"} in c["ports"],
    )
    probes = {
        p: c.get(p, {}).get("httpGet", {}).get("path")
        for p in ("livenessProbe", "readinessProbe", "startupProbe")
    }
    r.check(
        f"{tag}: probes /healthz, /readyz, startup /healthz",
        probes == {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"},
        str(probes),
    )
    r.check(f"{tag}: resources empty unless set", c.get("resources") == merged["resources"])
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    r.check(
        f"{tag}: restricted pod securityContext",
        psc.get("runAsNonRoot") is True
        and psc.get("runAsUser") == 65532
        and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
        str(psc),
    )
    r.check(
        f"{tag}: restricted container securityContext",
        csc.get("readOnlyRootFilesystem") is True
        and csc.get("allowPrivilegeEscalation") is False
        and csc.get("capabilities", {}).get("drop") == ["ALL"]
        and csc.get("runAsNonRoot") is True
        and csc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
        str(csc),
    )
    r.check(
        f"{tag}: terminationGracePeriodSeconds from values",
        pod["terminationGracePeriodSeconds"] == merged["terminationGracePeriodSeconds"],
    )
    ann = spec["template"]["metadata"].get("annotations", {})
    r.check(
        f"{tag}: config checksum annotation",
        re.fullmatch(r"[0-9a-f]{64}", ann.get("checksum/config", "")) is not None,
    )
    pod_labels = spec["template"]["metadata"]["labels"]
    r.check(f"{tag}: selector matches the pod labels", subset(spec["selector"]["matchLabels"], pod_labels))
    r.check(
        f"{tag}: metrics Service selects the pods",
        len(metrics_svc) == 1 and subset(metrics_svc[0]["spec"]["selector"], pod_labels),
    )

    # Credentials: the Secret the pods mount, never a ConfigMap.
    vols = {v["name"]: v for v in pod["volumes"]}
    secret_name = vols["app-secret"]["secret"]["secretName"]
    existing = merged["secret"]["existingSecret"]
    secrets = by_kind(objs, "Secret")
    plain_secrets = [s for s in secrets if "helm.sh/hook" not in s["metadata"].get("annotations", {})]
    if existing:
        r.check(
            f"{tag}: existingSecret mounted, no Secret created", secret_name == existing and not plain_secrets
        )
    else:
        ok = len(plain_secrets) == 1 and plain_secrets[0]["metadata"]["name"] == secret_name
        r.check(f"{tag}: the created Secret is the one mounted", ok)
        key = merged["secret"]["key"]
        r.check(
            f"{tag}: Secret holds secret.appSecret under secret.key",
            ok
            and plain_secrets[0]["data"].get(key)
            == base64.b64encode(merged["secret"]["appSecret"].encode()).decode(),
        )
        r.check(f"{tag}: Secret checksum annotation", "checksum/secret" in ann)
    r.check(
        f"{tag}: bk.app_secret_file points at the mounted key",
        env.get("AGENTWATCH__BK__APP_SECRET_FILE", {}).get("value") == f"{SECRET_DIR}/app_secret"
        and vols["app-secret"]["secret"]["items"] == [{"key": merged["secret"]["key"], "path": "app_secret"}],
    )
    configmaps = by_kind(objs, "ConfigMap")
    app_secret = merged["secret"]["appSecret"]
    for cm in configmaps:
        text = json.dumps(cm)
        r.check(
            f"{tag}: ConfigMap {cm['metadata']['name']} holds no credential",
            (not app_secret or app_secret not in text)
            and not re.search(r"app_secret\s*=|sasl\.password", text),
        )
        if cm["metadata"]["labels"].get("app.kubernetes.io/component") == "dashboard":
            continue
        try:
            tomllib.loads(cm["data"]["agentwatch.toml"])
            r.check(f"{tag}: ConfigMap {cm['metadata']['name']} is valid TOML", True)
        except tomllib.TOMLDecodeError as e:
            r.check(f"{tag}: ConfigMap {cm['metadata']['name']} is valid TOML", False, str(e))
    if app_secret:
        leaks = [
            f"{o['kind']}/{o['metadata']['name']}"
            for o in objs
            if o["kind"] != "Secret" and app_secret in json.dumps(o)
        ]
        r.check(f"{tag}: the app secret appears in no object but a Secret", not leaks, ", ".join(leaks))

    # ServiceMonitor: present iff enabled; picks the metrics Service only.
    sms = by_kind(objs, "ServiceMonitor")
    if merged["prometheus"]["monitor"]["enabled"]:
        ok = r.check(f"{tag}: one ServiceMonitor", len(sms) == 1)
        if ok:
            sm = sms[0]
            sel = sm["spec"]["selector"]["matchLabels"]
            r.check(
                f"{tag}: ServiceMonitor selects the metrics Service",
                len(metrics_svc) == 1 and subset(sel, metrics_svc[0]["metadata"]["labels"]),
            )
            r.check(
                f"{tag}: ServiceMonitor skips the headless Service",
                not any(subset(sel, h["metadata"]["labels"]) for h in headless),
            )
            ep = sm["spec"]["endpoints"][0]
            r.check(
                f"{tag}: ServiceMonitor endpoint is the http port",
                ep["port"] == "http" and ep.get("path") == "/metrics",
            )
            mon = merged["prometheus"]["monitor"]
            for field in ("interval", "scrapeTimeout"):
                if mon[field]:
                    r.check(f"{tag}: ServiceMonitor {field}", ep.get(field) == mon[field])
            if mon["sampleLimit"]:
                r.check(
                    f"{tag}: ServiceMonitor sampleLimit", sm["spec"].get("sampleLimit") == mon["sampleLimit"]
                )
            if mon["relabelings"]:
                r.check(f"{tag}: ServiceMonitor relabelings", ep.get("relabelings") == mon["relabelings"])
            if mon["metricRelabelings"]:
                r.check(
                    f"{tag}: ServiceMonitor metricRelabelings",
                    ep.get("metricRelabelings") == mon["metricRelabelings"],
                )
            if mon["namespace"]:
                r.check(
                    f"{tag}: ServiceMonitor in another namespace selects the release namespace",
                    sm["metadata"]["namespace"] == mon["namespace"]
                    and sm["spec"]["namespaceSelector"]["matchNames"] == ["bk"],
                )
    else:
        r.check(f"{tag}: no ServiceMonitor", not sms)

    if merged["podDisruptionBudget"]["enabled"]:
        pdbs = by_kind(objs, "PodDisruptionBudget")
        r.check(
            f"{tag}: PodDisruptionBudget selects the pods",
            len(pdbs) == 1 and subset(pdbs[0]["spec"]["selector"]["matchLabels"], pod_labels),
        )
    if merged["networkPolicy"]["enabled"]:
        nps = by_kind(objs, "NetworkPolicy")
        ok = r.check(
            f"{tag}: NetworkPolicy selects the pods",
            len(nps) == 1 and subset(nps[0]["spec"]["podSelector"]["matchLabels"], pod_labels),
        )
        if ok:
            np = nps[0]["spec"]
            r.check(
                f"{tag}: NetworkPolicy admits port http only",
                np["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}],
            )
            r.check(
                f"{tag}: NetworkPolicy restricts egress only when asked",
                ("Egress" in np["policyTypes"]) == merged["networkPolicy"]["egress"]["restrict"],
            )

    # The Grafana dashboard ConfigMap: present iff enabled, the chart's JSON verbatim.
    dash_cfg = merged["grafana"]["dashboard"]
    dash_cms = [
        c for c in configmaps if c["metadata"]["labels"].get("app.kubernetes.io/component") == "dashboard"
    ]
    if dash_cfg["enabled"]:
        ok = r.check(f"{tag}: one dashboard ConfigMap", len(dash_cms) == 1)
        if ok:
            cm = dash_cms[0]
            r.check(
                f"{tag}: dashboard ConfigMap carries the sidecar label "
                f"{dash_cfg['label']}={dash_cfg['labelValue']!r}",
                cm["metadata"]["labels"].get(dash_cfg["label"]) == dash_cfg["labelValue"]
                and subset(dash_cfg["labels"], cm["metadata"]["labels"]),
            )
            r.check(
                f"{tag}: dashboard ConfigMap namespace and annotations",
                cm["metadata"]["namespace"] == (dash_cfg["namespace"] or "bk")
                and subset(dash_cfg["annotations"], cm["metadata"].get("annotations", {})),
            )
            r.check(
                f"{tag}: dashboard ConfigMap holds dashboards/agentwatch.json verbatim",
                list(cm["data"]) == ["agentwatch.json"]
                and cm["data"]["agentwatch.json"].strip() == DASHBOARD.read_text(encoding="utf-8").strip(),
            )
    else:
        r.check(f"{tag}: no dashboard ConfigMap", not dash_cms)

    # The PrometheusRule: present iff enabled; structure, alerts and their PromQL.
    prs = by_kind(objs, "PrometheusRule")
    if merged["prometheus"]["rules"]["enabled"]:
        if r.check(f"{tag}: one PrometheusRule", len(prs) == 1):
            check_prometheus_rule(r, tag, prs[0], merged, METRICS, LITERALS)
            if PROMTOOL:
                promtool_check(r, f"{tag}: PrometheusRule", prs[0]["spec"]["groups"], PROMTOOL)
    else:
        r.check(f"{tag}: no PrometheusRule", not prs)

    # The topic-creation hook.
    jobs = by_kind(objs, "Job")
    if merged["createTopics"]["enabled"]:
        ok = r.check(f"{tag}: one create-topics Job", len(jobs) == 1)
        if ok:
            job = jobs[0]
            ann_job = job["metadata"]["annotations"]
            r.check(
                f"{tag}: Job is a pre-install,pre-upgrade hook",
                ann_job.get("helm.sh/hook") == "pre-install,pre-upgrade",
            )
            r.check(f"{tag}: Job has a hook-delete-policy", bool(ann_job.get("helm.sh/hook-delete-policy")))
            jpod = job["spec"]["template"]["spec"]
            jc = jpod["containers"][0]
            r.check(
                f"{tag}: Job runs kafka create-topics",
                jc["args"] == ["kafka", "create-topics", "--config", "/etc/agentwatch/agentwatch.toml"],
            )
            r.check(f"{tag}: Job uses the service image", jc["image"] == c["image"])
            r.check(
                f"{tag}: Job pods are not selected by the Service",
                not subset(metrics_svc[0]["spec"]["selector"], job["spec"]["template"]["metadata"]["labels"]),
            )
            r.check(
                f"{tag}: Job sets no shard.*",
                not any(k.startswith("AGENTWATCH__SHARD__") for k in env_map(jc)),
            )
            jvols = {v["name"]: v for v in jpod["volumes"]}
            hooks = {
                (o["kind"], o["metadata"]["name"]): int(
                    o["metadata"]["annotations"].get("helm.sh/hook-weight", "0")
                )
                for o in objs
                if "helm.sh/hook" in o["metadata"].get("annotations", {})
            }
            job_weight = hooks[("Job", job["metadata"]["name"])]
            cm_name = jvols["config"]["configMap"]["name"]
            r.check(
                f"{tag}: Job's ConfigMap is a hook created before it",
                hooks.get(("ConfigMap", cm_name), 99) < job_weight,
            )
            sec_name = jvols["app-secret"]["secret"]["secretName"]
            if existing:
                r.check(f"{tag}: Job mounts the existing Secret", sec_name == existing)
            else:
                r.check(
                    f"{tag}: Job's Secret is a hook created before it",
                    hooks.get(("Secret", sec_name), 99) < job_weight,
                )
            if not merged["serviceAccount"]["create"]:
                r.check(
                    f"{tag}: Job runs as the existing ServiceAccount",
                    jpod.get("serviceAccountName") == merged["serviceAccount"]["name"],
                )
            else:
                r.check(
                    f"{tag}: Job does not need the chart's ServiceAccount", "serviceAccountName" not in jpod
                )
    else:
        r.check(f"{tag}: no Job", not jobs)

    if kv is not None:
        for o in objs:
            if o["kind"] in ("ServiceMonitor", "PrometheusRule"):
                continue  # CRDs: kubernetes-validate has no schema for them
            for version in (kv.latest_version() if v == "latest" else v for v in KUBE_VERSIONS):
                try:
                    kv.validate(o, version, strict=True)
                    r.check(
                        f"{tag}: {o['kind']}/{o['metadata']['name']} valid for Kubernetes {version}", True
                    )
                except kv.ValidationError as e:
                    path = ".".join(str(p) for p in e.path)
                    r.check(
                        f"{tag}: {o['kind']}/{o['metadata']['name']} valid for Kubernetes {version}",
                        False,
                        f"{path}: {e.message}",
                    )

    if agentwatch:
        run_check_config(r, tag, agentwatch, objs, workload, merged)


def run_check_config(
    r: Report, tag: str, binary: str, objs: list[dict], workload: dict, merged: dict
) -> None:
    """Runs `agentwatch check-config` on the rendered ConfigMap with each container's
    environment, the mounted secret replaced by a temporary file."""
    cms = {
        cm["metadata"]["name"]: cm["data"]["agentwatch.toml"]
        for cm in by_kind(objs, "ConfigMap")
        if "agentwatch.toml" in cm.get("data", {})
    }
    pods = []
    replicas = workload["spec"]["replicas"]
    for ordinal in sorted({0, replicas - 1}):
        pods.append(
            (f"{workload['metadata']['name']}-{ordinal}", workload["spec"]["template"]["spec"], ordinal)
        )
    for job in by_kind(objs, "Job"):
        pods.append((f"{job['metadata']['name']}-x7k2p", job["spec"]["template"]["spec"], None))
    for pod_name, pod, ordinal in pods:
        c = pod["containers"][0]
        vols = {v["name"]: v for v in pod["volumes"]}
        with tempfile.TemporaryDirectory() as tmp:
            cfg = Path(tmp) / "agentwatch.toml"
            cfg.write_text(cms[vols["config"]["configMap"]["name"]], encoding="utf-8")
            secret = Path(tmp) / "app_secret"
            secret.write_text("check-chart-secret\n", encoding="utf-8")
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOSTNAME": pod_name}
            for e in c.get("env", []):
                if "value" in e:
                    env[e["name"]] = e["value"]
                elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
                    env[e["name"]] = pod_name
                else:
                    env[e["name"]] = "from-a-secret"
            env["AGENTWATCH__BK__APP_SECRET_FILE"] = str(secret)
            name = f"{tag}: agentwatch check-config accepts the config of pod {pod_name}"
            p = subprocess.run(
                [binary, "check-config", "--config", str(cfg)],
                check=False,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            if not r.check(name, p.returncode == 0, p.stderr.strip()[-800:]):
                continue
            effective = tomllib.loads(p.stdout)
            shard = effective.get("shard", {})
            if ordinal is not None:
                want_total = merged["sharding"]["shards"] if merged["sharding"]["enabled"] else 1
                r.check(
                    f"{tag}: pod {pod_name} runs shard {ordinal} of {want_total}",
                    (shard.get("index"), shard.get("total"))
                    == (ordinal if want_total > 1 else 0, want_total),
                    str(shard),
                )
                r.check(
                    f"{tag}: pod {pod_name} listens on 0.0.0.0:9108",
                    effective.get("http", {}).get("listen") == "0.0.0.0:9108",
                )
            r.check(f"{tag}: pod {pod_name} prints the secret masked", "check-chart-secret" not in p.stdout)


def check_rendering(r: Report, values: dict, with_kv: bool, agentwatch: str | None) -> None:
    import helm_python as helm

    kv = None
    if with_kv:
        import kubernetes_validate as kv

    print(f"rendering with Helm {helm.helm_sdk_version()} (helm-python-sdk {helm.__version__})")
    rd = Renderer(helm)
    for f in sorted((CHART / "ci").glob("*.yaml")):
        tag = f"ci/{f.name}"
        vals = load_yaml(f) or {}
        report = helm.lint(str(CHART), vals, strict=True, namespace="bk")
        msgs = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + [
            {"error": e} for e in report.get("errors", []) or []
        ]
        r.check(f"{tag}: helm lint --strict is clean", not msgs, "; ".join(str(m.get("error")) for m in msgs))
        try:
            objs = rd.render(vals)
        except (helm.HelmError, RenderedYamlError) as e:
            r.check(f"{tag}: renders", False, str(e))
            continue
        r.check(f"{tag}: renders", True)
        notes = rd.chart.render(vals, name="aw", namespace="bk").get("agentwatch/templates/NOTES.txt", "")
        r.check(f"{tag}: NOTES.txt renders", "kubectl" in notes)
        try:
            check_rendered_set(r, tag, vals, objs, kv, agentwatch)
        except (KeyError, IndexError, TypeError) as e:
            # A missing field the checks rely on: report it instead of a traceback.
            r.check(f"{tag}: rendered objects have the expected shape", False, f"{type(e).__name__}: {e}")

    # A config change must roll the pods.
    base = load_yaml(CHART / "ci" / "default-values.yaml")
    changed = merge(base, {"config": values["config"] + "\n# changed\n"})

    def checksum(v: dict) -> str | None:
        try:
            pod = by_kind(rd.render(v), "Deployment")[0]["spec"]["template"]
            return pod["metadata"].get("annotations", {}).get("checksum/config")
        except (helm.HelmError, RenderedYamlError, IndexError, KeyError):
            return None

    a, b = checksum(base), checksum(changed)
    r.check("a config change changes the pods' checksum/config", a is not None and b is not None and a != b)

    for f in sorted((TESTS / "bad-values").glob("*.yaml")):
        try:
            rd.chart.validate_schema(merge({"secret": {"appSecret": "x"}}, load_yaml(f) or {}))
            r.check(
                f"bad-values/{f.name} is rejected by Helm's schema validation",
                False,
                f"accepted, expected {expectation(f)}",
            )
        except helm.HelmError:
            r.check(f"bad-values/{f.name} is rejected by Helm's schema validation", True)

    if PROMTOOL:
        promtool_unit_tests(r, rd, PROMTOOL)

    fails = sorted((TESTS / "render-fail").glob("*.yaml"))
    r.check("helm/tests/render-fail has cases", len(fails) >= 1)
    for f in fails:
        want = expectation(f)
        try:
            rd.render(load_yaml(f) or {})
            r.check(f"render-fail/{f.name} fails to render", False, f"rendered, expected failure '{want}'")
        except helm.HelmError as e:
            r.check(f"render-fail/{f.name} fails with '{want}'", want in str(e), str(e))


DEFAULTS: dict = {}
METRICS: dict[str, Metric] = {}
LITERALS: set[str] = set()
PROMTOOL: str | None = None


def main() -> int:
    global DEFAULTS, METRICS, LITERALS, PROMTOOL
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--render", action="store_true", help="require helm-python-sdk (fail when it is missing)")
    ap.add_argument(
        "--kube-validate", action="store_true", help="require kubernetes-validate (fail when it is missing)"
    )
    ap.add_argument(
        "--agentwatch", metavar="BIN", help="agentwatch binary for check-config on the rendered configs"
    )
    ap.add_argument(
        "--promtool",
        action="store_true",
        help="require promtool (Debian package prometheus; fail when it is missing)",
    )
    args = ap.parse_args()

    r = Report()
    DEFAULTS = load_yaml(CHART / "values.yaml")
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    check_chart_yaml(r)
    check_schema(r, schema, DEFAULTS)
    check_values_documented(r, DEFAULTS, schema)
    check_templates(r, DEFAULTS)
    check_dockerfile(r, DEFAULTS)
    METRICS, LITERALS = metric_catalogue(), source_literals()
    typed = sum(1 for m in METRICS.values() if m.kind)
    r.check(f"src/ registers metrics the checks can read ({typed} found)", typed >= 20, str(sorted(METRICS)))
    dash = check_dashboard(r, METRICS, LITERALS)
    check_rules_template(r, METRICS)
    PROMTOOL = shutil.which("promtool")
    if args.promtool and not PROMTOOL:
        r.check("promtool is installed (--promtool)", False, "apt-get install prometheus")
    if PROMTOOL:
        if dash is not None:
            promtool_dashboard(r, dash, PROMTOOL)
    else:
        print(
            "check_chart: promtool not installed; rules not checked by promtool"
            " (use --promtool to require it)"
        )

    have_helm = importlib.util.find_spec("helm_python") is not None
    have_kv = importlib.util.find_spec("kubernetes_validate") is not None
    if args.render and not have_helm:
        r.check("helm-python-sdk is installed (--render)", False, "pip install helm-python-sdk")
    if args.kube_validate and not have_kv:
        r.check(
            "kubernetes-validate is installed (--kube-validate)", False, "pip install kubernetes-validate"
        )
    if args.agentwatch and not Path(args.agentwatch).is_file():
        r.check(f"{args.agentwatch} exists (--agentwatch)", False)
        args.agentwatch = None
    if have_helm:
        check_rendering(r, DEFAULTS, have_kv, args.agentwatch)
    else:
        print("check_chart: helm-python-sdk not installed; static checks only (use --render to require it)")
    return r.summary()


if __name__ == "__main__":
    sys.exit(main())
