#!/usr/bin/env python3
"""Assertions on the Helm charts in deploy/helm, run by scripts/helm-test.sh.

    check.py versions CHART_DIR...          the oldest and newest Kubernetes versions to validate
    check.py split-crds IN OUT              OUT: IN without the Prometheus Operator kinds
    check.py assert --helm H --rendered DIR --kube-version V [--bin-dir target/debug]

`assert` reads the charts' ci/ values files rendered into DIR/<chart>/<file>
(at Kubernetes V), renders more variants itself with helm, and prints one line
per failed check (FAIL ...), then how many checks ran and failed. Exit status
1 when any failed. It also holds every --flag in the rendered containers' args,
and every BOREALIS_* variable in their env, against the binaries in --bin-dir
(their --help; for the relay also the fields of RelayConfig, each of which it
reads as BOREALIS_<FIELD>): a missing binary fails, saying to build it.
"""

import argparse
import base64
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
HELM_DIR = ROOT / "deploy" / "helm"
AGENT = "borealis-agent"
RELAY = "borealis-relay"
CRD_GROUP = "monitoring.coreos.com/"
RELAY_CONFIG_RS = ROOT / "crates" / "relay" / "src" / "config.rs"
DATA_DIR = "/var/lib/borealis/data"

# The binary each chart runs.
BINARIES = {AGENT: "borealis-agent", RELAY: "borealis-relay"}

# BOREALIS_* variables a binary reads that neither its --help names nor (for the
# relay) RelayConfig's fields give: the name, the file that reads it (where the
# name must appear), and why it is not a flag.
ENV_ONLY = {
    "borealis-relay": {
        "BOREALIS_LOG": ("crates/logging/src/lib.rs",
                         "the log filter (an EnvFilter), read by borealis_logging before the configuration, not a setting"),
    },
    "borealis-agent": {
        "BOREALIS_LOG": ("crates/logging/src/lib.rs",
                         "the log filter (an EnvFilter), read by borealis_logging before the configuration, not a setting"),
    },
}


# ---------------------------------------------------------------- reporting

class Checks:
    def __init__(self):
        self.ran = 0
        self.failed = []
        self.context = ""

    def __call__(self, ok, what):
        self.ran += 1
        if not ok:
            line = f"{self.context}: {what}" if self.context else what
            self.failed.append(line)
            print(f"FAIL {line}", flush=True)
        return ok


check = Checks()


# ---------------------------------------------------------------- helpers

def docs_of(text):
    return [d for d in yaml.safe_load_all(text) if d]


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def one(docs, kind):
    found = by_kind(docs, kind)
    check(len(found) == 1, f"expected one {kind}, found {len(found)}")
    return found[0] if found else {}


def duration_seconds(text):
    """Seconds in a duration as borealis_core::duration::parse reads it."""
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    terms = re.findall(r"(\d+)\s*(ms|s|m|h|d)", text)
    if not terms or re.sub(r"(\d+)\s*(ms|s|m|h|d)|\s", "", text):
        raise ValueError(f"not a duration: {text!r}")
    return sum(int(n) * scale[u] for n, u in terms)


def arg_value(args, flag):
    """The values of FLAG in args, as `--flag value` or `--flag=value`."""
    out = []
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            out.append(args[i + 1])
        elif a.startswith(flag + "="):
            out.append(a.split("=", 1)[1])
    return out


class Helm:
    def __init__(self, binary):
        self.binary = binary

    def run(self, *args):
        p = subprocess.run([self.binary, *args], capture_output=True, text=True)
        return p.returncode, p.stdout, p.stderr

    def template(self, chart, values=(), sets=(), kube=None, release="t", extra=()):
        args = ["template", release, str(HELM_DIR / chart)]
        for v in values:
            args += ["-f", str(v)]
        for s in sets:
            args += ["--set", s]
        if kube:
            args += ["--kube-version", kube]
        return self.run(*args, *extra)

    def docs(self, chart, values=(), sets=(), kube=None, extra=()):
        rc, out, err = self.template(chart, values, sets, kube, extra=extra)
        check(rc == 0, f"helm template {chart} {list(map(str, values))} {list(sets)} {list(extra)} failed: {err.strip()}")
        return docs_of(out) if rc == 0 else []


def values_file(chart, name):
    return HELM_DIR / chart / "ci" / name


def load_values(chart, name):
    return yaml.safe_load(values_file(chart, name).read_text()) or {}


def pod_spec(deploy):
    return deploy.get("spec", {}).get("template", {}).get("spec", {})


def container(deploy):
    containers = pod_spec(deploy).get("containers", [])
    check(len(containers) == 1, f"expected one container, found {len(containers)}")
    return containers[0] if containers else {}


def env_map(c):
    return {e["name"]: e for e in c.get("env", [])}


def s_ref(env, name):
    """The secretKeyRef of env NAME, or {}."""
    return dig(env.get(name, {}), "valueFrom", "secretKeyRef", default={})


def dig(d, *path, default=None):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return default
        d = d[p]
    return d


# ---------------------------------------------------------------- checks on one rendering

SECRET_ENV = {
    "BOREALIS_CLIENT_SECRET", "BOREALIS_ADMIN_TOKEN", "BOREALIS_SECRET_KEY",
    "BOREALIS_DATABASE_URL", "BOREALIS_OIDC_CLIENT_SECRET",
}
SECRET_FLAGS = {"--client-secret", "--admin-token", "--secret-key", "--database-url", "--oidc-client-secret"}


def check_restricted(deploy):
    """The Pod Security "restricted" profile, and no API token."""
    spec = pod_spec(deploy)
    psc = spec.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True, "pod securityContext.runAsNonRoot is not true")
    check(psc.get("runAsUser") == 65532, f"pod securityContext.runAsUser is {psc.get('runAsUser')}, not 65532")
    check(psc.get("runAsGroup") == 65532, f"pod securityContext.runAsGroup is {psc.get('runAsGroup')}, not 65532")
    check(psc.get("fsGroup") == 65532, f"pod securityContext.fsGroup is {psc.get('fsGroup')}, not 65532")
    check(dig(psc, "seccompProfile", "type") == "RuntimeDefault", "pod seccompProfile is not RuntimeDefault")
    check(spec.get("automountServiceAccountToken") is False, "the pod mounts a service account token")
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        sc = c.get("securityContext", {})
        name = c.get("name")
        check(sc.get("allowPrivilegeEscalation") is False, f"container {name}: allowPrivilegeEscalation is not false")
        check(sc.get("readOnlyRootFilesystem") is True, f"container {name}: readOnlyRootFilesystem is not true")
        check(sc.get("privileged") in (None, False), f"container {name}: privileged")
        check("ALL" in (dig(sc, "capabilities", "drop") or []), f"container {name}: capabilities.drop lacks ALL")
        check(not dig(sc, "capabilities", "add"), f"container {name}: adds capabilities")
        check(sc.get("runAsUser", 65532) != 0, f"container {name}: runs as root")
    check(not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"),
          "the pod uses a host namespace")
    for v in spec.get("volumes", []):
        check("hostPath" not in v, f"volume {v.get('name')} is a hostPath")


def check_probes(deploy):
    c = container(deploy)
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        got = dig(c, probe, "httpGet", "path")
        check(got == path, f"{probe} path is {got!r}, not {path}")
        port = dig(c, probe, "httpGet", "port")
        check(port in ports or port in ports.values(), f"{probe} port {port!r} is not a container port")
    if "startupProbe" in c:
        check(dig(c, "startupProbe", "httpGet", "path") == "/healthz", "startupProbe path is not /healthz")


def check_grace(deploy, factor):
    """The kubelet waits longer than the binary may take to stop: --shutdown-grace
    for the agent; twice it for the relay (agents drain for up to the grace, then
    each listener's requests in flight get up to the grace)."""
    c = container(deploy)
    graces = arg_value(c.get("args", []), "--shutdown-grace")
    check(len(graces) == 1, f"--shutdown-grace given {len(graces)} times")
    if graces:
        grace = duration_seconds(graces[0])
        tgps = pod_spec(deploy).get("terminationGracePeriodSeconds")
        check(isinstance(tgps, int) and tgps > factor * grace,
              f"terminationGracePeriodSeconds {tgps} does not exceed {factor} x --shutdown-grace {graces[0]} ({grace}s)")


def check_no_secret_in_args_or_env(deploy):
    c = container(deploy)
    args = c.get("args", []) + c.get("command", [])
    for a in args:
        flag = a.split("=", 1)[0]
        check(flag not in SECRET_FLAGS, f"a secret passed as an argument: {flag}")
    for name, e in env_map(c).items():
        if name in SECRET_ENV:
            check("value" not in e and dig(e, "valueFrom", "secretKeyRef") is not None,
                  f"env {name} is not from a secretKeyRef")


def check_secrets_stay_in_secrets(docs, text, given):
    """Secret data (given or generated) is base64 in its Secret and nowhere else;
    the given values never appear in plain text."""
    for s in by_kind(docs, "Secret"):
        check("stringData" not in s, f"Secret {s['metadata']['name']} uses stringData (plain text)")
    for value in given:
        check(value not in text, f"a secret given as a value appears in plain text: {value[:12]}...")
        encoded = base64.b64encode(value.encode()).decode()
        holders = [s["metadata"]["name"] for s in by_kind(docs, "Secret")
                   if encoded in (s.get("data") or {}).values()]
        check(len(holders) == 1, f"the secret {value[:12]}... is in {len(holders)} Secret(s)' data, not 1")
        check(text.count(encoded) == 1, f"the secret {value[:12]}... appears {text.count(encoded)} times in base64, not once")
    for s in by_kind(docs, "Secret"):
        for key, encoded in (s.get("data") or {}).items():
            plain = base64.b64decode(encoded).decode()
            for other in docs:
                if other is s:
                    continue
                dumped = json.dumps(other)
                check(plain not in dumped and encoded not in dumped,
                      f"Secret {s['metadata']['name']} key {key} appears in {other['kind']} {other['metadata']['name']}")
    for cm in by_kind(docs, "ConfigMap"):
        for value in given:
            check(value not in json.dumps(cm), f"ConfigMap {cm['metadata']['name']} holds a secret")


def check_consistency(docs):
    """Selectors, ports, volumes and names that must meet."""
    deploys = by_kind(docs, "Deployment")
    pods = [(pod_spec(d), dig(d, "spec", "template", "metadata", "labels", default={})) for d in deploys]
    for d in deploys:
        sel = dig(d, "spec", "selector", "matchLabels", default={})
        labels = dig(d, "spec", "template", "metadata", "labels", default={})
        check(sel and sel.items() <= labels.items(), f"Deployment {d['metadata']['name']}: selector does not match its pods")
        spec = pod_spec(d)
        volumes = {v["name"] for v in spec.get("volumes", [])}
        for c in spec.get("containers", []):
            for m in c.get("volumeMounts", []):
                check(m["name"] in volumes, f"volumeMount {m['name']} has no volume")
            names = [p["name"] for p in c.get("ports", [])]
            check(len(names) == len(set(names)), "duplicate container port names")
        sa = spec.get("serviceAccountName")
        sas = [s["metadata"]["name"] for s in by_kind(docs, "ServiceAccount")]
        if sas:
            check(sa in sas, f"serviceAccountName {sa} is not the ServiceAccount made ({sas})")
    ports_of_pods = [{p["name"] for c in ps.get("containers", []) for p in c.get("ports", [])} for ps, _ in pods]
    for svc in by_kind(docs, "Service"):
        sel = dig(svc, "spec", "selector", default={})
        matching = [i for i, (_, labels) in enumerate(pods) if sel.items() <= labels.items()]
        check(sel and matching, f"Service {svc['metadata']['name']} selects no pod")
        for p in dig(svc, "spec", "ports", default=[]):
            tp = p.get("targetPort")
            check(all(tp in ports_of_pods[i] for i in matching) if isinstance(tp, str) else True,
                  f"Service {svc['metadata']['name']} targets port {tp}, which its pods lack")
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    for ing in by_kind(docs, "Ingress"):
        for rule in dig(ing, "spec", "rules", default=[]):
            for path in dig(rule, "http", "paths", default=[]):
                backend = dig(path, "backend", "service", default={})
                svc = services.get(backend.get("name"))
                check(svc is not None, f"Ingress {ing['metadata']['name']} routes to a Service not made: {backend.get('name')}")
                if svc:
                    names = {p.get("name") for p in svc["spec"]["ports"]}
                    check(dig(backend, "port", "name") in names, f"Ingress {ing['metadata']['name']} names a port its Service lacks")
    for pdb in by_kind(docs, "PodDisruptionBudget"):
        sel = dig(pdb, "spec", "selector", "matchLabels", default={})
        check(any(sel.items() <= labels.items() for _, labels in pods), "the PodDisruptionBudget selects no pod")
        spec = pdb["spec"]
        check(("minAvailable" in spec) != ("maxUnavailable" in spec), "the PodDisruptionBudget needs exactly one of minAvailable, maxUnavailable")
    for ps, labels in pods:
        for tsc in ps.get("topologySpreadConstraints", []):
            sel = dig(tsc, "labelSelector", "matchLabels", default={})
            check(sel and sel.items() <= labels.items(), "a topology spread constraint does not select the pods")


MONITOR_SPEC_KEYS = {"selector", "endpoints", "podMetricsEndpoints", "namespaceSelector", "jobLabel",
                     "podTargetLabels", "targetLabels", "sampleLimit"}
ENDPOINT_KEYS = {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels", "relabelings", "metricRelabelings"}
PROM_DURATION = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")


def check_monitors(docs):
    """ServiceMonitor and PodMonitor: kubernetes-validate has no schema for these
    CRDs, so their shape is checked here against the Prometheus Operator's v1 API."""
    services = by_kind(docs, "Service")
    deploys = by_kind(docs, "Deployment")
    for m in [d for d in docs if str(d.get("apiVersion", "")).startswith(CRD_GROUP)]:
        name = f"{m.get('kind')} {dig(m, 'metadata', 'name')}"
        check(m.get("apiVersion") == "monitoring.coreos.com/v1", f"{name}: apiVersion {m.get('apiVersion')}")
        check(m.get("kind") in ("ServiceMonitor", "PodMonitor"), f"{name}: unexpected kind")
        check(set(m) <= {"apiVersion", "kind", "metadata", "spec"}, f"{name}: unexpected top-level keys {set(m)}")
        check(re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", dig(m, "metadata", "name", default="")) is not None,
              f"{name}: not a DNS-1123 name")
        spec = m.get("spec", {})
        check(set(spec) <= MONITOR_SPEC_KEYS, f"{name}: unexpected spec keys {set(spec) - MONITOR_SPEC_KEYS}")
        sel = dig(spec, "selector", "matchLabels", default={})
        check(bool(sel), f"{name}: no selector.matchLabels")
        key = "endpoints" if m["kind"] == "ServiceMonitor" else "podMetricsEndpoints"
        endpoints = spec.get(key, [])
        check(isinstance(endpoints, list) and endpoints, f"{name}: no {key}")
        if m["kind"] == "ServiceMonitor":
            targets = [s for s in services if sel.items() <= dig(s, "metadata", "labels", default={}).items()]
            check(len(targets) == 1, f"{name}: selects {len(targets)} Services of the release, not 1")
            port_names = {p.get("name") for s in targets for p in s["spec"]["ports"]}
        else:
            targets = [d for d in deploys if sel.items() <= dig(d, "spec", "template", "metadata", "labels", default={}).items()]
            check(len(targets) == 1, f"{name}: selects the pods of {len(targets)} Deployments, not 1")
            port_names = {p.get("name") for d in targets for c in pod_spec(d)["containers"] for p in c.get("ports", [])}
        for e in endpoints:
            check(set(e) <= ENDPOINT_KEYS, f"{name}: unexpected endpoint keys {set(e) - ENDPOINT_KEYS}")
            check(e.get("port") in port_names, f"{name}: port {e.get('port')!r} is not among {port_names}")
            check(e.get("path") == "/metrics", f"{name}: path {e.get('path')!r} is not /metrics")
            for k in ("interval", "scrapeTimeout"):
                if k in e:
                    check(isinstance(e[k], str) and PROM_DURATION.match(e[k]), f"{name}: {k} {e[k]!r} is not a Prometheus duration")


def check_ha(docs, replicas, values=None):
    values = values or {}
    deploy = one(docs, "Deployment")
    spec = pod_spec(deploy)
    check(deploy.get("spec", {}).get("replicas") == replicas, f"replicas is {deploy.get('spec', {}).get('replicas')}, not {replicas}")
    pdbs = by_kind(docs, "PodDisruptionBudget")
    if replicas > 1:
        check(len(pdbs) == 1, f"replicaCount={replicas}: {len(pdbs)} PodDisruptionBudgets, not 1")
        check(bool(spec.get("topologySpreadConstraints")), f"replicaCount={replicas}: no topologySpreadConstraints")
        if values.get("affinity"):
            check(spec.get("affinity") == values["affinity"], "affinity is not the given one")
        elif values.get("podAntiAffinity", "soft") != "none":
            hard = values.get("podAntiAffinity") == "hard"
            key = ("required" if hard else "preferred") + "DuringSchedulingIgnoredDuringExecution"
            check(bool(dig(spec, "affinity", "podAntiAffinity", key)), f"replicaCount={replicas}: no {key} pod anti-affinity")
    else:
        check(not pdbs, "replicaCount=1: a PodDisruptionBudget (it would block every drain)")
        check(not spec.get("topologySpreadConstraints"), "replicaCount=1: topologySpreadConstraints")
        check(not dig(spec, "affinity", "podAntiAffinity"), "replicaCount=1: pod anti-affinity")


def check_common(chart, docs, text, given):
    deploy = one(docs, "Deployment")
    check_restricted(deploy)
    check_probes(deploy)
    check_grace(deploy, 2 if chart == RELAY else 1)
    check_no_secret_in_args_or_env(deploy)
    check_secrets_stay_in_secrets(docs, text, given)
    check_consistency(docs)
    check_monitors(docs)
    for d in docs:
        check(d.get("metadata", {}).get("namespace") in (None, "default"), f"{d['kind']} in another namespace")
        labels = dig(d, "metadata", "labels", default={})
        check(labels.get("app.kubernetes.io/name") and labels.get("app.kubernetes.io/instance") == "t",
              f"{d['kind']} {dig(d, 'metadata', 'name')} lacks the standard labels")


def given_secrets(chart, values):
    if chart == AGENT:
        return [v for v in [dig(values, "credentials", "clientSecret")] if v]
    return [v for v in [dig(values, "secretKey", "value"), dig(values, "adminToken", "value"),
                        dig(values, "database", "url"), dig(values, "oidc", "clientSecret", "value")] if v]


# ---------------------------------------------------------------- the agent

def agent_checks(helm, rendered, kube):
    chart = AGENT
    for f in sorted((HELM_DIR / chart / "ci").glob("*.yaml")):
        check.context = f"{chart} {f.name}"
        text = (rendered / chart / f.name).read_text()
        docs = docs_of(text)
        values = load_values(chart, f.name)
        check_common(chart, docs, text, given_secrets(chart, values))
        deploy = one(docs, "Deployment")
        c = container(deploy)
        args, env = c.get("args", []), env_map(c)
        replicas = values.get("replicaCount", 2)
        check_ha(docs, replicas, values)
        check(arg_value(args, "--relay") == [values["relay"]["url"]], f"--relay is {arg_value(args, '--relay')}")
        # The client secret: a file from a Secret volume, never env or args.
        files = arg_value(args, "--client-secret-file")
        check(len(files) == 1, "no --client-secret-file")
        check("BOREALIS_CLIENT_SECRET" not in env, "BOREALIS_CLIENT_SECRET is set: the secret belongs in a file")
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in pod_spec(deploy).get("volumes", [])}
        creds = values.get("credentials", {})
        secret_name = creds.get("existingSecret") or None
        if files:
            directory, _, leaf = files[0].rpartition("/")
            mount = mounts.get(directory, {})
            volume = volumes.get(mount.get("name"), {})
            check(bool(volume.get("secret")), f"{files[0]} is not on a Secret volume")
            items = dig(volume, "secret", "items", default=[])
            want_key = creds.get("clientSecretKey", "client-secret") if secret_name else "client-secret"
            check(items == [{"key": want_key, "path": leaf}], f"the credential volume's items are {items}")
            if secret_name:
                check(dig(volume, "secret", "secretName") == secret_name, "the credential volume is not the existing Secret")
        if secret_name:
            check(not by_kind(docs, "Secret"), "existingSecret given, yet the chart makes a Secret")
            ref = dig(env.get("BOREALIS_CLIENT_ID", {}), "valueFrom", "secretKeyRef", default={})
            if creds.get("clientId"):
                check(arg_value(args, "--client-id") == [creds["clientId"]], "--client-id is not the given id")
            else:
                check(ref == {"name": secret_name, "key": creds.get("clientIdKey", "client-id")},
                      f"BOREALIS_CLIENT_ID is not from the existing Secret's key: {ref}")
        else:
            secret = one(docs, "Secret")
            check(set((secret.get("data") or {})) == {"client-id", "client-secret"}, "the credential Secret's keys")
        # The allow-list, the CA, the proxy, the health listener.
        check(arg_value(args, "--allow") == values.get("allow", []), f"--allow is {arg_value(args, '--allow')}")
        check(("--allow-any" in args) == bool(values.get("allowAny")), "--allow-any does not follow allowAny")
        ca = dig(values, "relay", "ca", default={})
        if ca.get("secretName") or ca.get("configMapName"):
            ca_file = arg_value(args, "--ca-file")
            check(len(ca_file) == 1, "no --ca-file with relay.ca")
            if ca_file:
                directory, _, leaf = ca_file[0].rpartition("/")
                volume = volumes.get(mounts.get(directory, {}).get("name"), {})
                source = volume.get("secret") or volume.get("configMap") or {}
                check((source.get("secretName") or source.get("name")) in (ca.get("secretName"), ca.get("configMapName")),
                      "the CA volume is not the named Secret or ConfigMap")
                check(source.get("items") == [{"key": ca.get("key", "ca.crt"), "path": leaf}], "the CA volume's items")
        else:
            check(not arg_value(args, "--ca-file"), "--ca-file without relay.ca")
        proxy = values.get("proxy", {})
        for key, var in (("httpsProxy", "HTTPS_PROXY"), ("httpProxy", "HTTP_PROXY"), ("noProxy", "NO_PROXY")):
            if proxy.get(key):
                check(env.get(var, {}).get("value") == proxy[key], f"{var} is not proxy.{key}")
            else:
                check(var not in env, f"{var} set without proxy.{key}")
        port = dig(values, "health", "port", default=9100)
        check(arg_value(args, "--health-listen") == [f"$(POD_IP):{port}"], f"--health-listen is {arg_value(args, '--health-listen')}")
        check(dig(env.get("POD_IP", {}), "valueFrom", "fieldRef", "fieldPath") == "status.podIP", "POD_IP is not status.podIP")
        check(dig(env.get("BOREALIS_INSTANCE", {}), "valueFrom", "fieldRef", "fieldPath") == "metadata.name",
              "BOREALIS_INSTANCE is not the pod's name")
        names = [e["name"] for e in c.get("env", [])]
        check(names.index("POD_IP") == 0, "POD_IP must come first: $(POD_IP) reads only variables defined before it")
        check(arg_value(args, "--log-format") == [values.get("logFormat", "text")], "--log-format")
        check(dig(deploy, "spec", "template", "metadata", "annotations", "checksum/config") is not None,
              "no checksum/config annotation")
        if values.get("agentIdentifier"):
            check(arg_value(args, "--agent-id") == [values["agentIdentifier"]], "--agent-id")
        sm = dig(values, "serviceMonitor", "enabled", default=False)
        check(bool(by_kind(docs, "ServiceMonitor")) == sm, "ServiceMonitor does not follow serviceMonitor.enabled")
        check(any(s["metadata"]["name"].endswith("-metrics") for s in by_kind(docs, "Service")) == sm,
              "the metrics Service does not follow serviceMonitor.enabled")
        check(bool(by_kind(docs, "PodMonitor")) == dig(values, "podMonitor", "enabled", default=False),
              "PodMonitor does not follow podMonitor.enabled")
        check(not by_kind(docs, "ConfigMap"), "the agent chart makes a ConfigMap")

    check.context = f"{chart} variants"
    default = values_file(chart, "default-values.yaml")
    # One replica: no budget, no spreading.
    check_ha(helm.docs(chart, [default], ["replicaCount=1"], kube), 1)
    check_ha(helm.docs(chart, [values_file(chart, "ha-values.yaml")], ["replicaCount=1"], kube), 1)
    # The checksum follows the credential Secret, and only it.
    def checksum(*sets):
        docs = helm.docs(chart, [default], sets, kube)
        return dig(one(docs, "Deployment"), "spec", "template", "metadata", "annotations", "checksum/config") if docs else None
    a = checksum()
    check(a is not None and a == checksum(), "checksum/config differs between two renderings of the same values")
    check(a != checksum("credentials.clientSecret=bsk_another-secret-0123456789"), "checksum/config did not change with the client secret")
    check(a != checksum("credentials.clientId=agt_another"), "checksum/config did not change with the client id")
    # Wrong values fail, saying why.
    expect_failure(helm, chart, [], [], "relay.url is required", kube)
    expect_failure(helm, chart, [], ["relay.url=https://r:9090", "allow={a}"], "the agent's credential is required", kube)
    expect_failure(helm, chart, [default], ["allow=null"], "allow", kube)
    expect_failure(helm, chart, [default], ["credentials.existingSecret=x"], "not both", kube)
    expect_failure(helm, chart, [default], ["relay.ca.secretName=a", "relay.ca.configMapName=b"], "not both", kube)
    expect_failure(helm, chart, [default], ["terminationGracePeriodSeconds=30"], "must exceed shutdownGrace", kube)
    expect_failure(helm, chart, [default], ["podDisruptionBudget.minAvailable=1", "podDisruptionBudget.maxUnavailable=1"], "not both", kube)
    # Termination grace follows shutdownGrace.
    docs = helm.docs(chart, [default], ["shutdownGrace=2m 500ms"], kube)
    if docs:
        check(pod_spec(one(docs, "Deployment")).get("terminationGracePeriodSeconds") == 136,
              "terminationGracePeriodSeconds is not shutdownGrace (2m 500ms, rounded up) + 15")
    schema_checks(helm, chart, default, ["replicaCont=3", "relay.urll=https://x", "podDisruptionBudget.minAvaliable=1",
                                         "logFormat=yaml", "shutdownGrace=30"], kube)


# ---------------------------------------------------------------- the relay

def relay_checks(helm, rendered, kube):
    chart = RELAY
    for f in sorted((HELM_DIR / chart / "ci").glob("*.yaml")):
        check.context = f"{chart} {f.name}"
        text = (rendered / chart / f.name).read_text()
        docs = docs_of(text)
        values = load_values(chart, f.name)
        check_common(chart, docs, text, given_secrets(chart, values))
        deploy = one(docs, "Deployment")
        c = container(deploy)
        args, env = c.get("args", []), env_map(c)
        replicas = values.get("replicaCount", 1)
        check_ha(docs, replicas, values)
        # Listeners and the peer URL.
        check(arg_value(args, "--listen") == ["0.0.0.0:8080"], f"--listen is {arg_value(args, '--listen')}")
        check(arg_value(args, "--agent-listen") == ["0.0.0.0:9090"], f"--agent-listen is {arg_value(args, '--agent-listen')}")
        check(dig(env.get("POD_IP", {}), "valueFrom", "fieldRef", "fieldPath") == "status.podIP", "POD_IP is not status.podIP")
        peer_host = dig(values, "peer", "host", default="$(POD_IP)")
        check(env.get("BOREALIS_PEER_URL", {}).get("value") == f"http://{peer_host}:8080",
              f"BOREALIS_PEER_URL is {env.get('BOREALIS_PEER_URL')}, not http://{peer_host}:8080 (peer.host)")
        names = [e["name"] for e in c.get("env", [])]
        if "POD_IP" in names and "BOREALIS_PEER_URL" in names:
            check(names.index("POD_IP") < names.index("BOREALIS_PEER_URL"), "POD_IP must come before BOREALIS_PEER_URL")
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        check(ports == {"http": 8080, "grpc": 9090}, f"container ports are {ports}")
        # The data dir: a directory inside the volume, on the claim with SQLite; in
        # BOREALIS_DATA_DIR, not --data-dir, so that the CLI run in the pod finds
        # the admin token there.
        check(not arg_value(args, "--data-dir") and "--data-dir" not in args, "--data-dir in the args: the CLI would not see it")
        check(env.get("BOREALIS_DATA_DIR", {}).get("value") == DATA_DIR,
              f"BOREALIS_DATA_DIR is {env.get('BOREALIS_DATA_DIR')}, not {DATA_DIR}")
        mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
        check(mounts.get("data") == "/var/lib/borealis", "the data volume is not at /var/lib/borealis")
        volumes = {v["name"]: v for v in pod_spec(deploy).get("volumes", [])}
        has_db = bool(dig(values, "database", "existingSecret") or dig(values, "database", "url"))
        persistence = values.get("persistence", {}).get("enabled", True)
        pvcs = by_kind(docs, "PersistentVolumeClaim")
        strategy = dig(deploy, "spec", "strategy", "type")
        if has_db:
            check(not pvcs, "a PersistentVolumeClaim with a database")
            check("emptyDir" in volumes.get("data", {}), "the data volume is not an emptyDir with a database")
            check("BOREALIS_DATABASE_URL" in env, "no BOREALIS_DATABASE_URL with a database")
            if not values.get("strategy"):
                check(strategy == "RollingUpdate", f"strategy {strategy} with a database")
        else:
            check("BOREALIS_DATABASE_URL" not in env, "BOREALIS_DATABASE_URL without a database")
            check(strategy == "Recreate", f"strategy is {strategy}: two pods would share the SQLite volume")
            if persistence:
                check(len(pvcs) == 1, f"{len(pvcs)} PersistentVolumeClaims on SQLite, not 1")
                claim = dig(volumes.get("data", {}), "persistentVolumeClaim", "claimName")
                check(pvcs and claim == pvcs[0]["metadata"]["name"], "the data volume is not the claim")
                p = values.get("persistence", {})
                if pvcs and p.get("size"):
                    check(dig(pvcs[0], "spec", "resources", "requests", "storage") == p["size"], "claim size")
                if pvcs and p.get("storageClass"):
                    check(dig(pvcs[0], "spec", "storageClassName") == p["storageClass"], "claim storage class")
        # Secrets: each from a Secret, its own existing one when given.
        for var, section, default_key in (("BOREALIS_SECRET_KEY", "secretKey", "secret-key"),
                                          ("BOREALIS_ADMIN_TOKEN", "adminToken", "admin-token"),
                                          ("BOREALIS_DATABASE_URL", "database", "database-url")):
            existing = dig(values, section, "existingSecret")
            if existing:
                ref = dig(env.get(var, {}), "valueFrom", "secretKeyRef", default={})
                check(ref == {"name": existing, "key": dig(values, section, "key", default=default_key)},
                      f"{var} is not from the existing Secret {existing}: {ref}")
        oidc = values.get("oidc", {})
        # The secret key and the admin token: given ones from their Secrets; none
        # given, on SQLite none at all (the relay keeps its own in its data dir, which
        # no rendering changes), with PostgreSQL generated (lookup reads nothing here).
        def is_given(section):
            return bool(dig(values, section, "existingSecret") or dig(values, section, "value"))
        generated = dig(s_ref(env, "BOREALIS_SECRET_KEY"), "name", default="").endswith("-generated")
        if is_given("secretKey"):
            check("BOREALIS_SECRET_KEY" in env and not generated, "a given secret key is not the one passed")
        elif has_db:
            check(generated, "PostgreSQL without a secret key given: BOREALIS_SECRET_KEY is not from the generated Secret")
        else:
            check("BOREALIS_SECRET_KEY" not in env,
                  "SQLite without a secret key given: BOREALIS_SECRET_KEY is passed; the relay's own (data dir) must be used")
        generated = dig(s_ref(env, "BOREALIS_ADMIN_TOKEN"), "name", default="").endswith("-generated")
        if oidc.get("disableAdminToken"):
            check("BOREALIS_ADMIN_TOKEN" not in env, "BOREALIS_ADMIN_TOKEN with the admin token turned off")
            check("--disable-admin-token" in args, "no --disable-admin-token")
        elif is_given("adminToken"):
            check("BOREALIS_ADMIN_TOKEN" in env and not generated, "a given admin token is not the one passed")
        elif has_db:
            check(generated, "PostgreSQL without an admin token given: BOREALIS_ADMIN_TOKEN is not from the generated Secret")
        else:
            check("BOREALIS_ADMIN_TOKEN" not in env,
                  "SQLite without an admin token given: BOREALIS_ADMIN_TOKEN is passed; the relay's own (data dir) must be used")
        if not has_db:
            check(not [x for x in by_kind(docs, "Secret") if x["metadata"]["name"].endswith("-generated")],
                  "SQLite: the chart generated a Secret of keys")
        if oidc.get("issuer"):
            check(arg_value(args, "--oidc-issuer") == [oidc["issuer"]], "--oidc-issuer")
            check(arg_value(args, "--oidc-admin-group") == oidc.get("adminGroups", []), "--oidc-admin-group")
            files = arg_value(args, "--oidc-client-secret-file")
            check(len(files) == 1, "no --oidc-client-secret-file")
            check("BOREALIS_OIDC_CLIENT_SECRET" not in env, "the OIDC client secret in env: it belongs in a file")
            existing = dig(oidc, "clientSecret", "existingSecret")
            if existing and files:
                directory = files[0].rpartition("/")[0]
                name = next((m["name"] for m in c["volumeMounts"] if m["mountPath"] == directory), None)
                check(dig(volumes.get(name, {}), "secret", "secretName") == existing, "the OIDC secret volume is not the existing Secret")
        if all(dig(values, s, "existingSecret") for s in ("secretKey", "adminToken", "database")) and \
                (not oidc.get("issuer") or dig(oidc, "clientSecret", "existingSecret")):
            check(not by_kind(docs, "Secret"), "every secret is an existing Secret, yet the chart makes one")
        # Generated keys: kept on upgrades and uninstall; never given ones.
        for s in by_kind(docs, "Secret"):
            if s["metadata"]["name"].endswith("-generated"):
                keep = dig(s, "metadata", "annotations", "helm.sh/resource-policy")
                check((keep == "keep") == values.get("keepOnUninstall", True), "the generated Secret's keep policy")
                data = s.get("data", {})
                if "secret-key" in data:
                    check(len(base64.b64decode(base64.b64decode(data["secret-key"]))) == 32,
                          "the generated secret key is not base64 of 32 bytes")
                if "admin-token" in data:
                    check(len(base64.b64decode(data["admin-token"])) >= 16, "the generated admin token is short")
        # Services, ingress, the config file, the public URL.
        services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
        http = [s for s in services.values() if dig(s, "metadata", "labels", "app.kubernetes.io/component") == "http"]
        agents = [s for s in services.values() if dig(s, "metadata", "labels", "app.kubernetes.io/component") == "agents"]
        check(len(http) == 1 and len(agents) == 1, "expected one HTTP and one agents' Service")
        if http and agents:
            check(http[0]["spec"]["ports"][0]["targetPort"] == "http", "the HTTP Service does not target port http")
            check(agents[0]["spec"]["ports"][0]["targetPort"] == "grpc", "the agents' Service does not target port grpc")
            want = dig(values, "agentService", "type", default="ClusterIP")
            check(agents[0]["spec"]["type"] == want, f"the agents' Service type is {agents[0]['spec']['type']}, not {want}")
            check(agents[0]["spec"]["ports"][0].get("appProtocol") == dig(values, "agentService", "appProtocol", default="grpc"),
                  "the agents' Service lacks appProtocol")
        ingresses = by_kind(docs, "Ingress")
        want_ing = int(bool(dig(values, "ingress", "enabled"))) + int(bool(dig(values, "agentIngress", "enabled")))
        check(len(ingresses) == want_ing, f"{len(ingresses)} Ingresses, not {want_ing}")
        public = values.get("publicUrl") or (
            (("https://" if dig(values, "ingress", "tls") else "http://") + values["ingress"]["hosts"][0])
            if dig(values, "ingress", "enabled") else None)
        check(arg_value(args, "--public-url") == ([public] if public else []), f"--public-url is {arg_value(args, '--public-url')}")
        check(arg_value(args, "--trusted-proxy") == values.get("trustedProxies", []), "--trusted-proxy")
        config = values.get("config")
        cms = by_kind(docs, "ConfigMap")
        if config:
            check(len(cms) == 1 and arg_value(args, "--config") == ["/etc/borealis/config/relay.toml"], "the config file")
            if cms:
                toml = cms[0]["data"]["relay.toml"]
                try:
                    import tomllib
                    parsed = tomllib.loads(toml)
                    check(parsed == config, f"relay.toml reads {parsed}, not {config}")
                except ImportError:
                    print("NOTE relay.toml not parsed back: Python lacks tomllib (3.11+)")
        else:
            check(not cms and not arg_value(args, "--config"), "a config file without config")
        check(bool(by_kind(docs, "ServiceMonitor")) == dig(values, "serviceMonitor", "enabled", default=False),
              "ServiceMonitor does not follow serviceMonitor.enabled")
        check(dig(deploy, "spec", "template", "metadata", "annotations", "checksum/config") is not None,
              "no checksum/config annotation")

    check.context = f"{chart} variants"
    default = values_file(chart, "default-values.yaml")
    ha = values_file(chart, "ha-values.yaml")
    check_ha(helm.docs(chart, [ha], ["replicaCount=1"], kube), 1)
    check_ha(helm.docs(chart, [ha], ["replicaCount=2"], kube), 2)
    # Several replicas need PostgreSQL: the chart says so.
    expect_failure(helm, chart, [default], ["replicaCount=2"], "replicaCount=2 needs a PostgreSQL database", kube)
    expect_failure(helm, chart, [default], ["database.url=mysql://x"], "must be a postgres:// URL", kube)
    expect_failure(helm, chart, [default], ["adminToken.value=short"], "at least 16 characters", kube)
    expect_failure(helm, chart, [default], ["secretKey.value=c2hvcnQ="], "base64 of 32 bytes", kube)
    expect_failure(helm, chart, [default], ["oidc.disableAdminToken=true"], "leaves no organization admin", kube)
    expect_failure(helm, chart, [default], ["oidc.issuer=https://sso.example.com"], "needs oidc.clientId", kube)
    expect_failure(helm, chart, [default], ["config.admin_token=abcdefghijklmnopq"], "config.admin_token is not taken here", kube)
    expect_failure(helm, chart, [default], ["config.listen=0.0.0.0:1"], "config.listen is not taken here", kube)
    expect_failure(helm, chart, [default], ["config.peer_url=http://x:8080"], "set peer.host", kube)
    # TLS on the relay itself: refused wherever it could be set.
    for sets in (["config.tls_cert=/tls/tls.crt"], ["config.tls_key=/tls/tls.key"], ["extraArgs={--tls-cert=/tls/tls.crt}"],
                 ["extraArgs={--tls-key,/tls/tls.key}"], ["extraEnv[0].name=BOREALIS_TLS_CERT", "extraEnv[0].value=/x"]):
        expect_failure(helm, chart, [default], sets, "terminate TLS at the Ingress", kube)
    # Termination grace: over twice shutdownGrace.
    expect_failure(helm, chart, [default], ["terminationGracePeriodSeconds=30"], "must exceed twice shutdownGrace", kube)
    expect_failure(helm, chart, [default], ["terminationGracePeriodSeconds=60"], "must exceed twice shutdownGrace", kube)
    docs = helm.docs(chart, [default], ["terminationGracePeriodSeconds=61"], kube)
    if docs:
        check(pod_spec(one(docs, "Deployment")).get("terminationGracePeriodSeconds") == 61,
              "terminationGracePeriodSeconds=61 (over twice shutdownGrace 30s) is not taken")
    expect_failure(helm, chart, [default], ["secretKey.existingSecret=a", "secretKey.value=b"], "not both", kube)
    # IPv6: peer.host.
    docs = helm.docs(chart, [default], ["peer.host=[$(POD_IP)]"], kube)
    if docs:
        env = env_map(container(one(docs, "Deployment")))
        check(env.get("BOREALIS_PEER_URL", {}).get("value") == "http://[$(POD_IP)]:8080",
              f"peer.host=[$(POD_IP)]: BOREALIS_PEER_URL is {env.get('BOREALIS_PEER_URL')}")
    # SQLite, nothing given: no key or token passed, no Secret generated, so that
    # every rendering is the same (helm template, Argo CD) and an upgrade is fine.
    first = helm.template(chart, [default], [], kube)
    again = helm.template(chart, [default], [], kube, extra=["--is-upgrade"])
    check(first[0] == 0 and again[0] == 0 and first[1] == again[1],
          "SQLite with nothing given: two renderings (install, upgrade) differ, or one failed")
    docs = docs_of(first[1]) if first[0] == 0 else []
    if docs:
        env = env_map(container(one(docs, "Deployment")))
        check("BOREALIS_SECRET_KEY" not in env and "BOREALIS_ADMIN_TOKEN" not in env,
              "SQLite with nothing given: BOREALIS_SECRET_KEY or BOREALIS_ADMIN_TOKEN is passed")
        check(not by_kind(docs, "Secret"), "SQLite with nothing given: the chart makes a Secret")
    # PostgreSQL, nothing given: generated at install (lookup reads nothing here) ...
    pg = ["database.url=postgres://borealis@db/borealis"]
    docs = helm.docs(chart, [default], pg, kube)
    if docs:
        env = env_map(container(one(docs, "Deployment")))
        gen = [x for x in by_kind(docs, "Secret") if x["metadata"]["name"] == "t-borealis-relay-generated"]
        check(len(gen) == 1 and set(gen[0].get("data", {})) == {"secret-key", "admin-token"},
              "PostgreSQL with nothing given: no generated Secret of secret-key and admin-token")
        for var, key in (("BOREALIS_SECRET_KEY", "secret-key"), ("BOREALIS_ADMIN_TOKEN", "admin-token")):
            check(s_ref(env, var) == {"name": "t-borealis-relay-generated", "key": key}, f"PostgreSQL: {var} is not the generated {key}")
    # ... and an upgrade that cannot read them back fails, naming what to give.
    rc, _, err = helm.template(chart, [default], pg, kube, extra=["--is-upgrade"])
    check(rc != 0 and "would generate a new secret key" in err and "secretKey.existingSecret" in err,
          f"PostgreSQL upgrade with the generated key unreadable did not fail naming secretKey.existingSecret: {err.strip()}")
    rc, _, err = helm.template(chart, [default], pg + ["secretKey.existingSecret=keys"], kube, extra=["--is-upgrade"])
    check(rc != 0 and "would generate a new admin token" in err and "adminToken.existingSecret" in err,
          f"PostgreSQL upgrade with the generated admin token unreadable did not fail naming adminToken.existingSecret: {err.strip()}")
    docs = helm.docs(chart, [default], pg + ["secretKey.existingSecret=keys", "adminToken.existingSecret=keys"], kube,
                     extra=["--is-upgrade"])
    if docs:
        check(not [x for x in by_kind(docs, "Secret") if x["metadata"]["name"].endswith("-generated")],
              "PostgreSQL upgrade with both given: a generated Secret")
    # The checksum follows given secrets and the config file; generated keys do not
    # move it (two renderings generate two keys, and the same checksum).
    def checksum(*sets):
        docs = helm.docs(chart, [default], sets, kube)
        return dig(one(docs, "Deployment"), "spec", "template", "metadata", "annotations", "checksum/config") if docs else None
    a = checksum()
    check(a is not None and a == checksum(), "checksum/config differs between two renderings of the same values")
    token = checksum("adminToken.value=bat_first-token-0123456789")
    check(token != a and token != checksum("adminToken.value=bat_other-token-0123456789"),
          "checksum/config did not change with the admin token")
    check(a != checksum("config.callback_timeout=12h"), "checksum/config did not change with config")
    check(a != checksum("database.existingSecret=db", "secretKey.existingSecret=keys"), "checksum/config did not change with the secrets' source")
    # Termination grace follows shutdownGrace: twice it (agents drain, then requests
    # in flight finish), and 15 s.
    docs = helm.docs(chart, [default], ["shutdownGrace=1m"], kube)
    if docs:
        check(pod_spec(one(docs, "Deployment")).get("terminationGracePeriodSeconds") == 135,
              "terminationGracePeriodSeconds is not 2 x shutdownGrace (1m) + 15")
    docs = helm.docs(chart, [default], [], kube)
    if docs:
        check(pod_spec(one(docs, "Deployment")).get("terminationGracePeriodSeconds") == 75,
              "terminationGracePeriodSeconds is not 2 x shutdownGrace (30s) + 15 by default")
    # No persistence: an emptyDir, no claim.
    docs = helm.docs(chart, [default], ["persistence.enabled=false"], kube)
    if docs:
        check(not by_kind(docs, "PersistentVolumeClaim"), "a claim with persistence.enabled=false")
    docs = helm.docs(chart, [default], ["persistence.existingClaim=mine"], kube)
    if docs:
        check(not by_kind(docs, "PersistentVolumeClaim"), "a claim made beside persistence.existingClaim")
        vol = [v for v in pod_spec(one(docs, "Deployment"))["volumes"] if v["name"] == "data"]
        check(vol and dig(vol[0], "persistentVolumeClaim", "claimName") == "mine", "the data volume is not the existing claim")
    schema_checks(helm, chart, default, ["replicaCont=3", "persistence.sise=5Gi", "oidc.adminGroup={a}",
                                         "agentService.type=Ingress", "shutdownGrace=soon"], kube)


# ---------------------------------------------------------------- both

def expect_failure(helm, chart, values, sets, message, kube):
    rc, _, err = helm.template(chart, values, sets, kube)
    check(rc != 0, f"helm template {chart} with {sets} succeeded; it must fail ({message})")
    if rc != 0:
        check(message in err, f"helm template {chart} with {sets} failed without saying {message!r}: {err.strip()}")


def schema_checks(helm, chart, default, typos, kube):
    """values.schema.json refuses what is not a value, at install, template and lint."""
    for typo in typos:
        rc, _, err = helm.template(chart, [default], [typo], kube)
        check(rc != 0, f"helm template {chart} --set {typo} succeeded; the schema must refuse it")
        if rc != 0:
            check("schema" in err, f"helm template {chart} --set {typo} failed, but not on the schema: {err.strip()}")
    with tempfile.TemporaryDirectory() as tmp:
        typo_file = Path(tmp) / "typo-values.yaml"
        base = yaml.safe_load(default.read_text()) or {}
        base["replicaCont"] = 3
        typo_file.write_text(yaml.safe_dump(base))
        rc, out, err = helm.run("lint", "--strict", str(HELM_DIR / chart), "-f", str(typo_file))
        check(rc != 0, f"helm lint {chart} with replicaCont in a values file passed; it must fail")
        check("replicaCont" in out + err, f"helm lint {chart} does not name replicaCont: {(out + err).strip()}")
        rc, _, err = helm.run("install", "t", str(HELM_DIR / chart), "-f", str(typo_file), "--dry-run=client")
        check(rc != 0 and "replicaCont" in err, f"helm install --dry-run {chart} with replicaCont did not fail on it: {err.strip()}")
    # The chart's Kubernetes floor is enforced.
    rc, _, err = helm.template(chart, [default], [], "1.24.0")
    check(rc != 0, f"helm template {chart} --kube-version 1.24.0 succeeded; Chart.yaml's kubeVersion must refuse it")
    if rc != 0:
        check("kubeVersion" in err, f"helm template {chart} --kube-version 1.24.0 failed, but not on kubeVersion: {err.strip()}")


def notes_checks(helm, chart, kube):
    """NOTES.txt renders for every values file and shows no given secret."""
    for f in sorted((HELM_DIR / chart / "ci").glob("*.yaml")):
        check.context = f"{chart} {f.name} NOTES.txt"
        rc, out, err = helm.run("install", "t", str(HELM_DIR / chart), "-f", str(f), "--dry-run=client")
        check(rc == 0, f"helm install --dry-run failed: {err.strip()}")
        notes = out.split("NOTES:", 1)[1] if "NOTES:" in out else ""
        check(notes.strip() != "", "no NOTES")
        for value in given_secrets(chart, load_values(chart, f.name)):
            check(value not in notes, "NOTES.txt shows a secret")


def docs_checks(chart):
    """Every value: a comment in values.yaml, a row in README.md, a schema entry."""
    check.context = f"{chart} docs"
    chart_dir = HELM_DIR / chart
    schema = json.loads((chart_dir / "values.schema.json").read_text())
    readme = (chart_dir / "README.md").read_text()
    lines = (chart_dir / "values.yaml").read_text().splitlines()
    values = yaml.safe_load("\n".join(lines))

    def ours(path):
        """Whether path is a value the chart defines (not inside a Kubernetes object)."""
        node = schema
        for p in path[:-1]:
            node = node.get("properties", {}).get(p, {})
        return node.get("additionalProperties") is False

    stack = []
    for n, line in enumerate(lines):
        m = re.match(r"^( *)([A-Za-z][A-Za-z0-9_-]*):", line)
        if not m:
            continue
        depth = len(m.group(1)) // 2
        stack = stack[:depth] + [m.group(2)]
        if not ours(stack):
            continue
        name = ".".join(stack)
        commented = "#" in line.split(":", 1)[1] or (n > 0 and lines[n - 1].strip().startswith("#"))
        check(commented, f"values.yaml: {name} has no comment")
        check(f"`{name}`" in readme, f"README.md: no row for {name}")
    check(yaml.safe_load(yaml.safe_dump(values)) == values, "values.yaml does not round-trip")

    def walk(node, path):
        for key, sub in node.get("properties", {}).items():
            here = path + [key]
            v = values
            for p in here:
                v = v.get(p, "<missing>") if isinstance(v, dict) else "<missing>"
            check(v != "<missing>", f"values.schema.json: {'.'.join(here)} is not in values.yaml")
            if sub.get("type") == "object":
                check("additionalProperties" in sub, f"values.schema.json: {'.'.join(here)} says nothing of additionalProperties")
                if sub.get("additionalProperties") is False:
                    walk(sub, here)
    check(schema.get("$schema") == "http://json-schema.org/draft-07/schema#", "values.schema.json is not draft-07")
    check(schema.get("additionalProperties") is False, "values.schema.json: top level allows additional properties")
    walk(schema, [])


# ---------------------------------------------------------------- the binaries

def relay_config_keys():
    """The fields of RelayConfig (crates/relay/src/config.rs): the relay reads each
    as BOREALIS_<FIELD> (config::Environment, prefix BOREALIS)."""
    text = RELAY_CONFIG_RS.read_text()
    m = re.search(r"pub struct RelayConfig \{(.*?)\n\}", text, re.S)
    fields = re.findall(r"^\s*pub (\w+):", m.group(1), re.M) if m else []
    check(len(fields) > 20 and "data_dir" in fields and "secret_key" in fields,
          f"{RELAY_CONFIG_RS.relative_to(ROOT)}: could not read RelayConfig's fields (found {fields})")
    return fields


def binary_checks(rendered, bin_dir):
    """Every --flag in the containers' args and every BOREALIS_* variable in their
    env, as rendered from every ci/ values file, is one the binary takes: its
    --help names it; for the relay a variable may also be BOREALIS_<FIELD> of
    RelayConfig; else it must be in ENV_ONLY, with the reason. And every flag and
    variable the Deployment template can write is rendered by some ci/ file, so
    that this covers it."""
    for chart, binary in BINARIES.items():
        check.context = f"{chart}: flags and variables against {binary} --help"
        path = Path(bin_dir) / binary
        if not (path.is_file() and os.access(path, os.X_OK)):
            check(False, f"{path} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)")
            continue
        p = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=120)
        check(p.returncode == 0 and p.stdout.strip(), f"{path} --help failed ({p.returncode}): {p.stderr.strip()}")
        help_text = p.stdout
        known_flags = set(re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)", help_text))
        known_env = {name: "its --help" for name in re.findall(r"\bBOREALIS_[A-Z0-9_]+\b", help_text)}
        if binary == "borealis-relay":
            for field in relay_config_keys():
                known_env.setdefault(f"BOREALIS_{field.upper()}", f"RelayConfig.{field}")
        for name, (source, reason) in ENV_ONLY[binary].items():
            check(name in (ROOT / source).read_text(), f"ENV_ONLY {name}: {source} does not read it ({reason})")
            known_env.setdefault(name, f"env only: {reason}")
        flags_seen, env_seen = set(), set()
        for f in sorted((rendered / chart).glob("*.yaml")):
            for deploy in by_kind(docs_of(f.read_text()), "Deployment"):
                spec = pod_spec(deploy)
                for c in spec.get("containers", []) + spec.get("initContainers", []):
                    for a in c.get("args", []) + c.get("command", []):
                        if not isinstance(a, str) or not a.startswith("--"):
                            continue
                        flag = a.split("=", 1)[0]
                        flags_seen.add(flag)
                        check(flag in known_flags, f"{f.name}: container {c.get('name')} is given {flag}, which {binary} --help does not list")
                    for e in c.get("env", []):
                        name = e.get("name", "")
                        if not name.startswith("BOREALIS_"):
                            continue
                        env_seen.add(name)
                        check(name in known_env,
                              f"{f.name}: container {c.get('name')} is given {name}: not in {binary} --help"
                              + (", not a RelayConfig field" if binary == "borealis-relay" else "")
                              + ", not in check.py's ENV_ONLY")
        template = (HELM_DIR / chart / "templates" / "deployment.yaml").read_text()
        for flag in sorted(set(re.findall(r"^\s*- (--[a-z0-9][a-z0-9-]*)\s*$", template, re.M)) - flags_seen):
            check(False, f"templates/deployment.yaml can pass {flag}, but no ci/ values file renders it: it goes unchecked")
        for name in sorted(set(re.findall(r"^\s*- name: (BOREALIS_[A-Z0-9_]+)\s*$", template, re.M)) - env_seen):
            check(False, f"templates/deployment.yaml can set {name}, but no ci/ values file renders it: it goes unchecked")
        print(f"NOTE {binary}: {len(flags_seen)} flags and {len(env_seen)} BOREALIS_* variables rendered, checked against its --help")


# ---------------------------------------------------------------- commands

def cmd_versions(charts):
    import kubernetes_validate.utils as kv
    from packaging.version import Version
    known = sorted({v for v in kv.all_versions()}, key=Version)
    floors, ceilings = [], []
    for chart in charts:
        constraint = str(yaml.safe_load((Path(chart) / "Chart.yaml").read_text()).get("kubeVersion", ""))
        for part in re.split(r"[ ,]+", constraint.strip()):
            m = re.fullmatch(r"(>=|<=|<|>)v?(\d+\.\d+(?:\.\d+)?)(?:-0)?", part)
            if not m:
                sys.exit(f"{chart}: kubeVersion part {part!r} is not one this script reads (>=X.Y.Z-0, <X.Y.Z-0)")
            op, v = m.groups()
            (floors if op.startswith(">") else ceilings).append((op, Version(v)))
    ok = [v for v in known
          if all(Version(v) >= f if op == ">=" else Version(v) > f for op, f in floors)
          and all(Version(v) <= c if op == "<=" else Version(v) < c for op, c in ceilings)]
    if not ok:
        sys.exit(f"no Kubernetes version kubernetes-validate knows ({known[0]}..{known[-1]}) is one the charts support")
    print(ok[0], ok[-1])


def cmd_split(src, dst):
    kept, skipped = [], []
    for d in docs_of(Path(src).read_text()):
        if str(d.get("apiVersion", "")).startswith(CRD_GROUP):
            skipped.append(f"{d['kind']}/{dig(d, 'metadata', 'name')}")
        else:
            kept.append(d)
    Path(dst).write_text(yaml.safe_dump_all(kept, sort_keys=False))
    for s in skipped:
        print(f"SKIP {Path(src).name}: {s}: a Prometheus Operator CRD, not in kubernetes-validate's schemas; "
              f"check.py checks its shape instead")
    print(f"{len(kept)} manifests to validate, {len(skipped)} skipped", file=sys.stderr)


def cmd_assert(helm_bin, rendered, kube, bin_dir):
    helm = Helm(helm_bin)
    rendered = Path(rendered)
    binary_checks(rendered, bin_dir)
    agent_checks(helm, rendered, kube)
    relay_checks(helm, rendered, kube)
    for chart in (AGENT, RELAY):
        notes_checks(helm, chart, kube)
        docs_checks(chart)
    print(f"{check.ran} checks, {len(check.failed)} failed")
    return 1 if check.failed else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("versions")
    v.add_argument("charts", nargs="+")
    s = sub.add_parser("split-crds")
    s.add_argument("src")
    s.add_argument("dst")
    a = sub.add_parser("assert")
    a.add_argument("--helm", required=True)
    a.add_argument("--rendered", required=True)
    a.add_argument("--kube-version", required=True)
    a.add_argument("--bin-dir", default=str(ROOT / "target" / "debug"),
                   help="where borealis-relay and borealis-agent are (default: target/debug)")
    args = parser.parse_args()
    if args.command == "versions":
        cmd_versions(args.charts)
    elif args.command == "split-crds":
        cmd_split(args.src, args.dst)
    else:
        sys.exit(cmd_assert(args.helm, args.rendered, args.kube_version, args.bin_dir))


if __name__ == "__main__":
    main()
