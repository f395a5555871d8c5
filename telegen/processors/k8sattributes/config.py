"""Processor ``k8sattributes``: Kubernetes pod metadata on profiles, shaped like
the OpenTelemetry Collector's ``k8sattributesprocessor`` (``auth_type``,
``filter.node_from_env_var``, ``extract.metadata``/``labels``/``annotations``,
``pod_association``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from telegen.semconv import CONTAINER_ID, K8S_POD_UID

POD_UID = K8S_POD_UID
__all__ = ["CONTAINER_ID", "METADATA_NAMES", "POD_UID", "ExtractConfig", "FieldRule",
           "FilterConfig", "K8sAttributesConfig"]

# Every name ``extract.metadata`` accepts (OpenTelemetry semantic conventions).
METADATA_NAMES = (
    "k8s.namespace.name", "k8s.pod.name", "k8s.pod.uid", "k8s.container.name",
    "k8s.node.name", "k8s.deployment.name", "k8s.replicaset.name", "k8s.statefulset.name",
    "k8s.daemonset.name", "k8s.job.name", "k8s.cronjob.name",
)
DEFAULT_METADATA = [n for n in METADATA_NAMES if n != "k8s.replicaset.name"]
ASSOCIATION_NAMES = (CONTAINER_ID, POD_UID)
AUTH_TYPES = ("serviceAccount", "kubeConfig", "none")


@dataclass(frozen=True)
class FieldRule:
    """One ``extract.labels`` / ``extract.annotations`` entry."""

    tag_name: str          # may hold $1.. (written $$1 in YAML) with key_regex
    key: str = ""
    key_regex: re.Pattern[str] | None = None

    def attributes(self, values: dict[str, str], default_prefix: str) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.key_regex is None:
            if self.key in values:
                out[self.tag_name or default_prefix + self.key] = values[self.key]
            return out
        for k, v in values.items():
            m = self.key_regex.fullmatch(k)
            if m is not None:
                name = m.expand(self.tag_name) if self.tag_name else default_prefix + k
                out[name] = v
        return out


@dataclass
class FilterConfig:
    # Only pods on this node (field selector spec.nodeName): the node name is
    # read from this environment variable, set from the downward API's
    # spec.nodeName in the DaemonSet. Empty: every pod of the cluster.
    node_from_env_var: str = ""
    # The node name itself (takes precedence over node_from_env_var).
    node: str = ""


@dataclass
class ExtractConfig:
    # Attributes taken from the pod (and its owner references).
    metadata: list[str] = field(default_factory=lambda: list(DEFAULT_METADATA))
    # Pod labels to copy: [{tag_name, key | key_regex, from: pod}]. Without
    # tag_name the attribute is k8s.pod.labels.<key>.
    labels: list[dict[str, Any]] = field(default_factory=list)
    # Pod annotations, as labels (default name k8s.pod.annotations.<key>).
    annotations: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class K8sAttributesConfig:
    # serviceAccount: in-cluster token and CA (service_account_dir) with
    # KUBERNETES_SERVICE_HOST/PORT; kubeConfig: ~/.kube/config or kubeconfig;
    # none: plain requests to api_server (tests, kubectl proxy).
    auth_type: str = "serviceAccount"
    # For auth_type kubeConfig: the file (empty: $KUBECONFIG, else ~/.kube/config).
    kubeconfig: str = ""
    # For auth_type kubeConfig: the context (empty: the current one).
    context: str = ""
    # For auth_type none: the API server URL, e.g. http://127.0.0.1:8001.
    api_server: str = ""
    # Where the pod's service-account token and ca.crt are mounted.
    service_account_dir: str = "/var/run/secrets/kubernetes.io/serviceaccount"
    # Which pods are watched: {node_from_env_var: K8S_NODE_NAME} (the variable
    # set from the downward API's spec.nodeName) or {node: NAME}; neither:
    # every pod of the cluster.
    filter: FilterConfig = field(default_factory=FilterConfig)
    # metadata: the attributes added (as listed); labels / annotations: pod
    # labels and annotations copied, [{tag_name, key | key_regex, from: pod}]
    # (default names k8s.pod.labels.<key>, k8s.pod.annotations.<key>; with
    # key_regex, tag_name may use $$1 for its first group).
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    # Tried in order until one matches: [{sources: [{from: resource_attribute,
    # name: container.id | k8s.pod.uid}]}].
    pod_association: list[dict[str, Any]] = field(default_factory=lambda: [
        {"sources": [{"from": "resource_attribute", "name": CONTAINER_ID}]},
        {"sources": [{"from": "resource_attribute", "name": POD_UID}]},
    ])
    # When a profile's resource lacks the association attributes, look for them
    # in each sample's labels (the ebpf receiver labels samples with
    # container.id); the extracted attributes are then added as sample labels.
    sample_labels: bool = True
    # A deleted pod's metadata is kept this long (profiles of its last seconds
    # are still in flight), then evicted.
    pod_delete_grace: float = field(default=120.0, metadata={"duration": True})
    # At most this many pods cached; further pods are counted and not cached.
    max_pods: int = 5000
    # The API server ends a watch after this long; it is then resumed.
    watch_timeout: float = field(default=300.0, metadata={"duration": True})
    # Connect / read timeout of list requests.
    request_timeout: float = field(default=30.0, metadata={"duration": True})
    # Retry delay after an API error doubles from 1 s up to this.
    max_backoff: float = field(default=60.0, metadata={"duration": True})
    # Pods fetched per list page (limit/continue).
    list_page_size: int = 500

    def validate(self) -> None:
        if self.auth_type not in AUTH_TYPES:
            raise ValueError(f"auth_type must be one of {', '.join(AUTH_TYPES)} "
                             f"(got {self.auth_type!r})")
        if self.auth_type == "none" and not self.api_server:
            raise ValueError("auth_type none needs api_server (e.g. http://127.0.0.1:8001)")
        for name in self.extract.metadata:
            if name not in METADATA_NAMES:
                raise ValueError(f"extract.metadata: unknown {name!r}; known: "
                                 f"{', '.join(METADATA_NAMES)}")
        self.label_rules()
        self.annotation_rules()
        self.association_names()
        for key in ("pod_delete_grace", "watch_timeout", "request_timeout", "max_backoff"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be > 0")
        if self.max_pods < 1 or self.list_page_size < 1:
            raise ValueError("max_pods and list_page_size must be >= 1")

    def node_name(self, environ: dict[str, str] | Any) -> str | None:
        """The node to watch: "" for the whole cluster, None when the named
        environment variable is unset or empty (misconfigured DaemonSet)."""
        if self.filter.node:
            return self.filter.node
        if not self.filter.node_from_env_var:
            return ""
        return environ.get(self.filter.node_from_env_var) or None

    def label_rules(self) -> list[FieldRule]:
        return _rules(self.extract.labels, "extract.labels")

    def annotation_rules(self) -> list[FieldRule]:
        return _rules(self.extract.annotations, "extract.annotations")

    def association_names(self) -> list[str]:
        names = []
        for i, assoc in enumerate(self.pod_association):
            sources = assoc.get("sources") or []
            if len(sources) != 1:
                raise ValueError(f"pod_association[{i}]: telegen matches on one source per "
                                 f"association (got {len(sources)})")
            src = sources[0]
            if src.get("from", "resource_attribute") != "resource_attribute":
                raise ValueError(f"pod_association[{i}]: only from: resource_attribute is "
                                 f"supported (profiles carry no connection address)")
            if src.get("name") not in ASSOCIATION_NAMES:
                raise ValueError(f"pod_association[{i}]: name must be one of "
                                 f"{', '.join(ASSOCIATION_NAMES)} (got {src.get('name')!r})")
            names.append(src["name"])
        return names


def _rules(raw: list[dict[str, Any]], where: str) -> list[FieldRule]:
    rules = []
    for i, entry in enumerate(raw):
        source = entry.get("from", "pod")
        if source != "pod":
            raise ValueError(f"{where}[{i}]: only from: pod is supported (got {source!r})")
        key, key_regex = entry.get("key", ""), entry.get("key_regex", "")
        if bool(key) == bool(key_regex):
            raise ValueError(f"{where}[{i}]: give exactly one of key and key_regex")
        compiled = None
        if key_regex:
            try:
                compiled = re.compile(key_regex)
            except re.error as exc:
                raise ValueError(f"{where}[{i}]: key_regex {key_regex!r}: {exc}") from None
        tag_name = entry.get("tag_name", "")
        if compiled is not None and tag_name:
            for ref in re.findall(r"\$(\d+)", tag_name):   # $N must name a group
                if int(ref) > compiled.groups:
                    raise ValueError(f"{where}[{i}]: tag_name refers to ${ref} but key_regex "
                                     f"has {compiled.groups} group(s)")
            tag_name = re.sub(r"\$(\d+)", r"\\g<\1>", tag_name.replace("\\", "\\\\"))
        rules.append(FieldRule(tag_name, key, compiled))
    return rules

