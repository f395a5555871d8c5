from __future__ import annotations

from telegen.component import Factory, Kind, lazy
from telegen.processors.k8sattributes.config import K8sAttributesConfig

FACTORY = Factory(
    type="k8sattributes",
    kind=Kind.PROCESSOR,
    config_type=K8sAttributesConfig,
    create=lazy("telegen.processors.k8sattributes.processor:K8sAttributesProcessor"),
    schema="processors/k8sattributes.json",
    description="add Kubernetes pod metadata (namespace, pod, container, owners, labels) "
                "by container.id / k8s.pod.uid, from a watch of this node's pods",
)
