"""deploy/kubernetes: every manifest against the Kubernetes OpenAPI schema, and
the ConfigMap's telegen config through ``telegen validate``.

The schema is the one the ``kubernetes`` Python package is generated from (its
model classes: ``openapi_types`` gives each field's type, ``attribute_map``
its JSON name). :func:`check` walks a manifest against them and rejects
unknown fields and wrong types (the package's own deserializer ignores unknown
fields); then ``ApiClient`` deserializes it into the model (V1DaemonSet...),
whose constructors reject missing required fields. No cluster is needed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
MODEL_OF_KIND = {("v1", "Namespace"): "V1Namespace",
                 ("v1", "ServiceAccount"): "V1ServiceAccount",
                 ("v1", "ConfigMap"): "V1ConfigMap",
                 ("apps/v1", "DaemonSet"): "V1DaemonSet",
                 ("rbac.authorization.k8s.io/v1", "ClusterRole"): "V1ClusterRole",
                 ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "V1ClusterRoleBinding"}
_PRIMITIVES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "bool": (bool,),
                                            "float": (int, float)}


def check(value: Any, type_name: str, path: str) -> list[str]:
    """Problems of ``value`` as an instance of OpenAPI type ``type_name``."""
    if type_name == "object":          # IntOrString, RawExtension...: any JSON
        return []
    m = re.fullmatch(r"(?:list|List)\[(.+)\]", type_name)
    if m:
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [p for i, v in enumerate(value) for p in check(v, m.group(1), f"{path}[{i}]")]
    m = re.fullmatch(r"(?:dict|Dict)\((?:str), (.+)\)|(?:dict|Dict)\[str, (.+)\]", type_name)
    if m:
        if not isinstance(value, dict):
            return [f"{path}: expected a mapping"]
        inner = m.group(1) or m.group(2)
        return [p for k, v in value.items() for p in check(v, inner, f"{path}.{k}")]
    if type_name in _PRIMITIVES:
        ok = isinstance(value, _PRIMITIVES[type_name]) and not (
            type_name != "bool" and isinstance(value, bool))
        return [] if ok else [f"{path}: expected {type_name}, got {value!r}"]
    if type_name == "datetime":
        return [] if isinstance(value, str) else [f"{path}: expected a timestamp"]
    model = getattr(client, type_name)
    if not isinstance(value, dict):
        return [f"{path}: expected a {type_name} mapping"]
    by_json = {json_name: attr for attr, json_name in model.attribute_map.items()}
    problems = []
    for key, v in value.items():
        attr = by_json.get(key)
        if attr is None:
            problems.append(f"{path}.{key}: unknown field of {type_name}")
            continue
        problems += check(v, model.openapi_types[attr], f"{path}.{key}")
    return problems


def deserialize(api: Any, doc: dict[str, Any], model: str) -> Any:
    """The package's own (private) deserializer, as ``ApiClient.deserialize``
    uses it on a response body: builds the model objects."""
    return api._ApiClient__deserialize(doc, model)


def manifests() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for f in sorted(DEPLOY.glob("*.yaml")):
        if f.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(f.read_text()):
            if doc:
                found.append((f.name, doc))
    return found


def by_kind(kind: str) -> dict[str, Any]:
    [doc] = [d for _, d in manifests() if d["kind"] == kind]
    return doc


def test_every_manifest_matches_the_openapi_schema() -> None:
    docs = manifests()
    assert {d["kind"] for _, d in docs} == {k for _, k in MODEL_OF_KIND}
    api = client.ApiClient()
    for name, doc in docs:
        model = MODEL_OF_KIND[(doc["apiVersion"], doc["kind"])]
        assert check(doc, model, f"{name}:{doc['kind']}") == []
        obj = deserialize(api, doc, model)     # required fields enforced
        assert obj.metadata.name


def test_the_checker_rejects_what_the_api_server_would() -> None:
    ds = by_kind("DaemonSet")
    bad = yaml.safe_load(yaml.safe_dump(ds))
    bad["spec"]["template"]["spec"]["hostPid"] = True                     # misspelt
    bad["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = 1
    bad["spec"]["template"]["spec"]["containers"][0]["env"] = {"A": "b"}  # not a list
    problems = check(bad, "V1DaemonSet", "ds")
    assert len(problems) == 3, problems
    nameless = ds | {"spec": {**ds["spec"],
                              "template": {"spec": {"containers": [{"image": "x"}]}}}}
    assert check(nameless, "V1DaemonSet", "ds") == []     # the walk sees types only...
    with pytest.raises(ValueError, match="name"):          # ...the model: required fields
        deserialize(client.ApiClient(), nameless, "V1DaemonSet")


def test_daemonset_runs_as_the_readme_container_command() -> None:
    ds = by_kind("DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= \
        ds["spec"]["template"]["metadata"]["labels"].items()
    assert pod["hostPID"] is True
    [container] = pod["containers"]
    assert container["securityContext"]["privileged"] is True
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    for path in ("/sys/kernel/debug", "/lib/modules", "/usr/src", "/var/cache/telegen"):
        assert host_paths[mounts[path]["name"]] == path
    assert mounts["/lib/modules"]["readOnly"] and mounts["/usr/src"]["readOnly"]
    env = {e["name"]: e for e in container["env"]}
    assert env["K8S_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "256Mi"}
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "512Mi"}
    config_volume = next(v for v in pod["volumes"] if v["name"] == mounts["/etc/telegen"]["name"])
    assert config_volume["configMap"]["name"] == by_kind("ConfigMap")["metadata"]["name"]
    assert container["args"] == ["run", "-c", "/etc/telegen/config.yaml"]


def test_rbac_grants_the_pod_watch_to_the_daemonsets_account() -> None:
    ds, sa = by_kind("DaemonSet"), by_kind("ServiceAccount")
    role, binding = by_kind("ClusterRole"), by_kind("ClusterRoleBinding")
    assert ds["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    assert sa["metadata"]["namespace"] == ds["metadata"]["namespace"]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"],
                              "verbs": ["get", "list", "watch"]}]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": sa["metadata"]["namespace"]}]
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        f.name for f in DEPLOY.glob("*.yaml") if f.name != "kustomization.yaml")


def test_configmap_config_passes_telegen_validate(tmp_path: Path) -> None:
    cm = by_kind("ConfigMap")
    config = tmp_path / "config.yaml"
    config.write_text(cm["data"]["config.yaml"])
    env_set = {e["name"] for e in by_kind("DaemonSet")["spec"]["template"]["spec"]
               ["containers"][0]["env"]}
    # every ${env:X} without a default is set by the DaemonSet
    for name in re.findall(r"\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)\}", config.read_text()):
        assert name in env_set
    done = subprocess.run([sys.executable, "-m", "telegen", "validate", "-c", str(config)],
                          capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin"})
    assert done.returncode == 0, done.stdout + done.stderr
    parsed = yaml.safe_load(config.read_text())
    pipeline = parsed["service"]["pipelines"]["profiles"]
    assert "k8sattributes" in pipeline["processors"] and pipeline["exporters"] == ["otlp"]
    assert parsed["processors"]["k8sattributes"]["filter"]["node_from_env_var"] in env_set
