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
            if o["kind"] == "ServiceMonitor":
                continue  # a CRD: kubernetes-validate has no schema for it
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
    cms = {cm["metadata"]["name"]: cm["data"]["agentwatch.toml"] for cm in by_kind(objs, "ConfigMap")}
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


def main() -> int:
    global DEFAULTS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--render", action="store_true", help="require helm-python-sdk (fail when it is missing)")
    ap.add_argument(
        "--kube-validate", action="store_true", help="require kubernetes-validate (fail when it is missing)"
    )
    ap.add_argument(
        "--agentwatch", metavar="BIN", help="agentwatch binary for check-config on the rendered configs"
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
