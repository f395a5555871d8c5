"""What one pod object (JSON, as the API server sends it) contributes: its
pod-level attributes and its containers' ids and names.

Owner names follow the pod's ``metadata.ownerReferences`` with no further API
calls (so the RBAC role needs pods only):

* ``k8s.deployment.name``: the owning ReplicaSet's name minus ``-<hash>`` when
  ``<hash>`` is the pod's ``pod-template-hash`` label, which is how the
  Deployment controller names its ReplicaSets; a ReplicaSet not made by a
  Deployment (no such label/suffix) gives no deployment name.
* ``k8s.cronjob.name``: the owning Job's name minus ``-<digits>``, how the
  CronJob controller names its Jobs (``<cronjob>-<scheduled minute>``). A Job
  someone named ``x-123`` by hand would be reported as cronjob ``x``; telling
  the two apart needs a Job lookup, which telegen does not do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from telegen.processors.k8sattributes.config import FieldRule
from telegen.untrusted import Refusals, Refused

MAX_VALUE = 4096          # longer label/annotation values are not copied
MAX_COPIED = 64           # label/annotation attributes per pod (key_regex rules)
_JOB_OF_CRONJOB = re.compile(r"^(.+)-\d+$")
_OWNER_ATTRIBUTE = {"StatefulSet": "k8s.statefulset.name", "DaemonSet": "k8s.daemonset.name",
                    "ReplicaSet": "k8s.replicaset.name", "Job": "k8s.job.name"}


@dataclass(slots=True)
class PodMeta:
    uid: str
    attributes: dict[str, str]          # pod-level, only the configured names
    containers: dict[str, str]          # container id (hex, no runtime://) -> name
    deleted_at: float | None = None


class Extractor:
    """Turns pod objects into :class:`PodMeta` for one configuration."""

    def __init__(self, metadata: list[str], labels: list[FieldRule],
                 annotations: list[FieldRule], refusals: Refusals | None = None) -> None:
        self.metadata = frozenset(metadata)
        self.labels = labels
        self.annotations = annotations
        self.refusals = refusals
        self.skipped_values = 0

    def pod(self, obj: Any) -> PodMeta:
        """A pod object -> PodMeta; Refused when it is not a pod with a uid."""
        if not isinstance(obj, dict):
            raise Refused("not_a_pod", type(obj).__name__)
        meta = obj.get("metadata") or {}
        uid = _text(meta.get("uid"))
        if not uid:
            raise Refused("not_a_pod", "object without metadata.uid")
        found: dict[str, str] = {
            "k8s.pod.uid": uid,
            "k8s.pod.name": _text(meta.get("name")),
            "k8s.namespace.name": _text(meta.get("namespace")),
            "k8s.node.name": _text((obj.get("spec") or {}).get("nodeName")),
        }
        pod_labels = _string_map(meta.get("labels"))
        found.update(_owners(meta.get("ownerReferences"), pod_labels))
        attributes = {k: v for k, v in found.items() if k in self.metadata and v}
        # labels and annotations are written by whoever may create pods: bounded
        copied: dict[str, str] = {}
        if self.labels:
            copied.update(self._copy(self.labels, pod_labels, "k8s.pod.labels."))
        if self.annotations:
            copied.update(self._copy(self.annotations, _string_map(meta.get("annotations")),
                                     "k8s.pod.annotations."))
        if len(copied) > MAX_COPIED:
            self._skip("too_many_attributes", f"pod {uid}: {len(copied)} > {MAX_COPIED}")
            copied = dict(sorted(copied.items())[:MAX_COPIED])
        attributes.update(copied)
        return PodMeta(uid, attributes, _containers(obj.get("status") or {}))

    def _copy(self, rules: list[FieldRule], values: dict[str, str],
              prefix: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for rule in rules:
            for name, value in rule.attributes(values, prefix).items():
                if len(value) > MAX_VALUE or len(name) > MAX_VALUE:
                    self._skip("too_large", f"{name}: {len(value)} bytes > {MAX_VALUE}")
                    continue
                out[name] = value
        return out

    def _skip(self, reason: str, detail: str) -> None:
        self.skipped_values += 1
        if self.refusals is not None:
            self.refusals.note("k8s_pod_field", reason, detail)


def _owners(refs: Any, pod_labels: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    if not isinstance(refs, list):
        return out
    for ref in refs:
        if not isinstance(ref, dict):
            continue
        kind, name = _text(ref.get("kind")), _text(ref.get("name"))
        attribute = _OWNER_ATTRIBUTE.get(kind)
        if attribute is None or not name:
            continue
        out[attribute] = name
        if kind == "ReplicaSet":
            template_hash = pod_labels.get("pod-template-hash", "")
            if template_hash and name.endswith("-" + template_hash):
                out["k8s.deployment.name"] = name[:-len(template_hash) - 1]
        elif kind == "Job":
            m = _JOB_OF_CRONJOB.match(name)
            if m:
                out["k8s.cronjob.name"] = m.group(1)
    return out


def _containers(status: dict[str, Any]) -> dict[str, str]:
    """``containerID`` (``containerd://<id>``, ``cri-o://<id>``, ``docker://<id>``)
    of running, init and ephemeral containers -> container name."""
    out: dict[str, str] = {}
    for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        statuses = status.get(key)
        if not isinstance(statuses, list):
            continue
        for cs in statuses:
            if not isinstance(cs, dict):
                continue
            cid = _text(cs.get("containerID")).rpartition("://")[2]
            name = _text(cs.get("name"))
            if cid and name:
                out[cid] = name
    return out


def _string_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def _text(value: Any) -> str:
    return value if isinstance(value, str) and len(value) <= MAX_VALUE else ""
