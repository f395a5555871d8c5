"""Add Kubernetes pod metadata to profiles, from the cache the watcher fills.

Association, in the order of ``pod_association``: the profile's resource
attribute ``container.id`` (a pod's ``status.containerStatuses[].containerID``
without its ``runtime://`` prefix) or ``k8s.pod.uid``. When the resource has
none of them and ``sample_labels`` is on, the same names are looked up in each
sample's labels (the ebpf receiver labels samples with ``container.id``) and the
pod's attributes are added to that sample's labels instead.

A pod not (yet) in the cache is a miss: the data passes unchanged and
``processor_k8sattributes_misses`` counts it. The pipeline never waits for the
API server.
"""

from __future__ import annotations

import os
import time
from typing import Any

from telegen.component import Consumer, CreateSettings, Host
from telegen.pdata import Labels, LabelValue, Profile, Profiles, Sample
from telegen.processors.k8sattributes.config import CONTAINER_ID, K8sAttributesConfig
from telegen.processors.k8sattributes.metadata import Extractor
from telegen.processors.k8sattributes.pods import PodCache, PodWatcher
from telegen.semconv import K8S_CONTAINER_NAME
from telegen.untrusted import Refusals

CONTAINER_NAME = K8S_CONTAINER_NAME   # also the service.name when the process names none


class K8sAttributesProcessor:
    mutates_data = True

    def __init__(self, settings: CreateSettings, config: K8sAttributesConfig,
                 next_consumer: Consumer) -> None:
        self._next = next_consumer
        self._config = config
        self._log = settings.logger
        self._telemetry = settings.telemetry
        self._associate_by = config.association_names()
        self._container_name = CONTAINER_NAME in config.extract.metadata
        self.cache = PodCache(config.max_pods, config.pod_delete_grace)
        t = settings.telemetry
        self._matched = t.counter("processor_k8sattributes_matched")
        self._misses = t.counter("processor_k8sattributes_misses")
        self._refusals = Refusals(t, settings.logger)
        self.extractor = Extractor(config.extract.metadata, config.label_rules(),
                                   config.annotation_rules(), self._refusals)
        self.watcher: PodWatcher | None = None
        self._evicted_at = time.monotonic()

    def start(self, host: Host) -> None:
        node = self._config.node_name(os.environ)
        if node is None:
            self._log.error("k8sattributes: filter.node_from_env_var names %s, which is unset "
                            "or empty (set it from the downward API's spec.nodeName); "
                            "no pod metadata will be added", self._config.filter.node_from_env_var)
            return
        self.watcher = PodWatcher(self._config, node, self.cache, self.extractor,
                                  self._telemetry, self._log, self._refusals,
                                  lambda: make_api_client(self._config))
        self.watcher.start()

    def shutdown(self, timeout_s: float = 30.0) -> None:
        if self.watcher is not None:
            self.watcher.stop(min(timeout_s, 5.0))

    def consume(self, profiles: Profiles) -> None:
        if time.monotonic() - self._evicted_at > 10.0:   # deleted pods past their grace
            self._evicted_at = time.monotonic()
            self.cache.evict_expired()
        for profile in profiles:
            try:
                self._apply(profile)
            except Exception:  # noqa: BLE001 - metadata is optional, the data is not
                self._log.exception("k8sattributes: could not add pod metadata")
        self._next.consume(profiles)

    # ----------------------------------------------------------------- lookups
    def attributes(self, name: str, value: str) -> dict[str, str] | None:
        """The attributes for association ``name`` = ``value``, or None (miss)."""
        if name == CONTAINER_ID:
            found = self.cache.by_container(value)
            if found is None:
                return None
            pod, container = found
            if self._container_name and container:
                return {**pod.attributes, CONTAINER_NAME: container}
            return pod.attributes
        by_uid = self.cache.by_uid(value)
        return by_uid.attributes if by_uid is not None else None

    def _apply(self, profile: Profile) -> None:
        keys = [(n, profile.resource.get(n)) for n in self._associate_by]
        keys = [(n, v) for n, v in keys if v]
        if keys:
            for name, value in keys:
                attrs = self.attributes(name, str(value))
                if attrs is not None:
                    profile.resource.update(attrs)
                    self._matched.add(1)
                    return
            self._misses.add(1)
            return
        if self._config.sample_labels:
            self._apply_to_samples(profile)

    def _apply_to_samples(self, profile: Profile) -> None:
        memo: dict[Labels, Labels] = {}
        changed = False
        out: list[Sample] = []
        for sample in profile:
            labels = memo.get(sample.labels)
            if labels is None:
                labels = memo[sample.labels] = self._labelled(sample.labels)
            if labels is not sample.labels:
                changed = True
                sample = Sample(sample.stack, sample.values, labels, sample.timestamps,
                                sample.link)
            out.append(sample)
        if changed:
            profile.replace_samples(out)

    def _labelled(self, labels: Labels) -> Labels:
        have: dict[str, Any] = dict(labels)
        tried = False
        for name in self._associate_by:
            value = have.get(name)
            if not value:
                continue
            tried = True
            attrs = self.attributes(name, str(value))
            if attrs is not None:
                self._matched.add(1)
                merged: dict[str, LabelValue] = {**have, **attrs}
                return tuple(sorted(merged.items()))
        if tried:
            self._misses.add(1)
        return labels


def make_api_client(config: K8sAttributesConfig) -> Any:
    """A ``kubernetes.client.ApiClient`` for ``config.auth_type``."""
    from kubernetes import client
    from kubernetes import config as kube_config
    from kubernetes.config.incluster_config import InClusterConfigLoader

    configuration = client.Configuration()
    if config.auth_type == "serviceAccount":
        directory = config.service_account_dir.rstrip("/")
        InClusterConfigLoader(token_filename=f"{directory}/token",
                              cert_filename=f"{directory}/ca.crt",
                              environ=os.environ).load_and_set(configuration)
    elif config.auth_type == "kubeConfig":
        kube_config.load_kube_config(config_file=config.kubeconfig or None,
                                     context=config.context or None,
                                     client_configuration=configuration)
    else:
        configuration.host = config.api_server
    return client.ApiClient(configuration)
