"""This node's pods, listed and watched from the API server into a bounded cache.

The watch follows the Kubernetes API conventions ("Efficient detection of
changes"): list (paged with limit/continue) to get the pods and the list's
``resourceVersion``, then ``watch=1&resourceVersion=RV`` streams one JSON event
per line (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR); a watch the server ends
is resumed from the last version seen; ``410 Gone`` (as the HTTP status or as
an ERROR event carrying a Status with code 410) means that version is no longer
kept: list again. API errors are counted and retried with a doubling delay.
Nothing here is ever waited for by the pipeline: lookups read the cache only.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from telegen.processors.k8sattributes.config import K8sAttributesConfig
from telegen.processors.k8sattributes.metadata import Extractor, PodMeta
from telegen.telemetry import ComponentTelemetry
from telegen.untrusted import Refusals, Refused, limits

MAX_LIST_PAGE = 64 << 20     # bytes of one list page
MAX_EVENT = 4 << 20          # bytes of one watch event (etcd stores objects <= 1.5 MiB)


class PodCache:
    """Pods by uid and by container id. Bounded: at most ``max_pods`` entries;
    deleted pods are kept ``grace`` seconds, then evicted."""

    def __init__(self, max_pods: int, grace: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._max = max_pods
        self._grace = grace
        self._clock = clock
        self._lock = threading.Lock()
        self._by_uid: dict[str, PodMeta] = {}
        self._by_container: dict[str, str] = {}
        self.refused = 0

    def __len__(self) -> int:
        return len(self._by_uid)

    def upsert(self, pod: PodMeta) -> bool:
        with self._lock:
            self._evict_expired()
            old = self._by_uid.get(pod.uid)
            if old is None and len(self._by_uid) >= self._max and not self._evict_oldest_deleted():
                self.refused += 1
                return False
            if old is not None:
                for cid in old.containers:
                    self._by_container.pop(cid, None)
            self._by_uid[pod.uid] = pod
            for cid in pod.containers:
                self._by_container[cid] = pod.uid
            return True

    def delete(self, uid: str) -> None:
        with self._lock:
            pod = self._by_uid.get(uid)
            if pod is not None and pod.deleted_at is None:
                pod.deleted_at = self._clock()

    def replace_all(self, pods: list[PodMeta]) -> None:
        """After a (re)list: these are the live pods; the others were deleted."""
        live = {p.uid for p in pods}
        with self._lock:
            gone = [u for u in self._by_uid if u not in live]
        for uid in gone:
            self.delete(uid)
        for pod in pods:
            self.upsert(pod)

    def by_uid(self, uid: str) -> PodMeta | None:
        pod = self._by_uid.get(uid)
        return pod if pod is not None and self._live(pod) else None

    def by_container(self, container_id: str) -> tuple[PodMeta, str] | None:
        with self._lock:
            uid = self._by_container.get(container_id)
            pod = self._by_uid.get(uid) if uid else None
        if pod is None or not self._live(pod):
            return None
        return pod, pod.containers.get(container_id, "")

    def _live(self, pod: PodMeta) -> bool:
        """Not deleted, or deleted less than ``grace`` seconds ago."""
        return pod.deleted_at is None or self._clock() - pod.deleted_at < self._grace

    def evict_expired(self) -> None:
        with self._lock:
            self._evict_expired()

    def _evict_expired(self) -> None:
        now = self._clock()
        for pod in [p for p in self._by_uid.values()
                    if p.deleted_at is not None and now - p.deleted_at >= self._grace]:
            self._remove(pod)

    def _evict_oldest_deleted(self) -> bool:
        deleted = [p for p in self._by_uid.values() if p.deleted_at is not None]
        if not deleted:
            return False
        self._remove(min(deleted, key=lambda p: p.deleted_at or 0.0))
        return True

    def _remove(self, pod: PodMeta) -> None:
        del self._by_uid[pod.uid]
        for cid in pod.containers:
            if self._by_container.get(cid) == pod.uid:
                del self._by_container[cid]


class Gone(Exception):
    """The resourceVersion asked for is no longer kept (HTTP 410): relist."""


class PodWatcher:
    """One named thread: list, then watch, this node's pods into ``cache``."""

    def __init__(self, config: K8sAttributesConfig, node: str, cache: PodCache,
                 extractor: Extractor, telemetry: ComponentTelemetry, logger: logging.Logger,
                 refusals: Refusals, make_client: Callable[[], Any]) -> None:
        self._config = config
        self._selector = f"spec.nodeName={node}" if node else None
        self._cache = cache
        self._extract = extractor
        self._log = logger
        self._refusals = refusals
        self._make_client = make_client
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._response: Any = None
        self.synced = threading.Event()          # first list done
        self._api_errors = telemetry.counter("processor_k8sattributes_api_errors")
        self._relists = telemetry.counter("processor_k8sattributes_relists")
        self._watches = telemetry.counter("processor_k8sattributes_watch_starts")
        self._events = {t: telemetry.counter("processor_k8sattributes_events", type=t)
                        for t in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR")}
        self._cached = telemetry.gauge("processor_k8sattributes_pods")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="k8sattributes-watch",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            try:
                response.shutdown()   # wakes the thread blocked reading the watch
            except Exception:  # noqa: BLE001 - already closed
                pass
        if self._thread is not None:
            self._thread.join(timeout_s)

    # ------------------------------------------------------------------ the loop
    def _run(self) -> None:
        """List, then watch; again and again. A round that made no progress (an
        error, a 410, a watch that ended at once with no event) waits a delay
        that doubles up to max_backoff, so a broken server or proxy is not
        hammered; a watch that delivered events resets the delay."""
        delay = 1.0
        api = None
        version: str | None = None
        gone_in_a_row = 0
        while not self._stop.is_set():
            progressed = False
            try:
                if api is None:
                    api = self._api()
                if version is None:
                    version = self._list(api)
                    self._relists.add(1)
                    self.synced.set()
                started = time.monotonic()
                version, events = self._watch(api, version)
                progressed = events > 0 or time.monotonic() - started >= 1.0
                gone_in_a_row = 0
            except Gone:
                self._log.info("k8sattributes: resourceVersion %s expired (410 Gone); "
                               "listing again", version)
                version = None
                gone_in_a_row += 1
                progressed = gone_in_a_row == 1     # the first relist is immediate
            except Exception as exc:  # noqa: BLE001 - the agent keeps running
                if self._stop.is_set():
                    break
                if getattr(exc, "status", None) == 410:   # HTTP 410 Gone
                    self._log.info("k8sattributes: 410 Gone; listing again")
                    version = None
                    gone_in_a_row += 1
                    progressed = gone_in_a_row == 1
                else:
                    self._api_errors.add(1)
                    self._log.warning("k8sattributes: API server: %s; retrying in %.0f s",
                                      _short(exc), delay)
            finally:
                self._cache.evict_expired()
                self._cached.set(len(self._cache))
            if progressed:
                delay = 1.0
            else:
                self._stop.wait(delay)
                delay = min(delay * 2, self._config.max_backoff)

    def _api(self) -> Any:
        from kubernetes.client import CoreV1Api

        return CoreV1Api(self._make_client())

    def _list(self, api: Any) -> str:
        pods: list[PodMeta] = []
        token: str | None = None
        timeout = self._config.request_timeout
        while True:
            kwargs: dict[str, Any] = {"limit": self._config.list_page_size}
            if token:
                kwargs["_continue"] = token
            if self._selector:
                kwargs["field_selector"] = self._selector
            response = api.list_pod_for_all_namespaces(
                _preload_content=False, _request_timeout=(timeout, timeout), **kwargs)
            try:
                body = limits.read_stream(response, MAX_LIST_PAGE)
            except Refused as exc:
                self._refusals.note_exc("k8s_list", exc)
                response.close()       # unread bytes: the connection is not reused
                raise
            finally:
                response.release_conn()
            page = json.loads(body)
            for obj in page.get("items") or []:
                pod = self._pod(obj)
                if pod is not None:
                    pods.append(pod)
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                self._cache.replace_all(pods)
                self._cached.set(len(self._cache))
                return str(meta.get("resourceVersion") or "")

    def _watch(self, api: Any, version: str) -> tuple[str, int]:
        """Watch from ``version`` until the server ends the stream: the last
        version seen and the number of events."""
        kwargs: dict[str, Any] = {"watch": True, "resource_version": version,
                                  "allow_watch_bookmarks": True,
                                  "timeout_seconds": int(self._config.watch_timeout)}
        if self._selector:
            kwargs["field_selector"] = self._selector
        timeout = self._config.request_timeout
        self._watches.add(1)
        response = api.list_pod_for_all_namespaces(
            _preload_content=False,
            _request_timeout=(timeout, self._config.watch_timeout + timeout), **kwargs)
        self._response = response
        events = 0
        complete = False
        try:
            if self._stop.is_set():    # stop() ran before the response was published
                return version, events
            for line in _lines(response, MAX_EVENT):
                if self._stop.is_set():
                    return version, events
                version = self._event(json.loads(line)) or version
                events += 1
            complete = True
        except Refused as exc:
            self._refusals.note_exc("k8s_watch", exc)
            raise Gone() from None     # an event was lost: list again
        finally:
            self._response = None
            if not complete:
                response.close()       # a stream left mid-way is not put back in the pool
            response.release_conn()
        return version, events

    def _event(self, event: Any) -> str | None:
        kind = event.get("type") if isinstance(event, dict) else None
        obj = event.get("object") if isinstance(event, dict) else None
        if kind not in self._events or not isinstance(obj, dict):
            self._refusals.note("k8s_watch", "bad_event", str(event)[:200])
            return None
        self._events[kind].add(1)
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone()
            raise RuntimeError(f"watch error event: {obj.get('message', obj)}")
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind == "DELETED":
            uid = (obj.get("metadata") or {}).get("uid")
            if isinstance(uid, str):
                self._cache.delete(uid)
        elif kind in ("ADDED", "MODIFIED"):
            pod = self._pod(obj)
            if pod is not None:
                self._cache.upsert(pod)
        self._cached.set(len(self._cache))
        return str(version) if version else None

    def _pod(self, obj: Any) -> PodMeta | None:
        try:
            return self._extract.pod(obj)
        except Refused as exc:
            self._refusals.note_exc("k8s_pod", exc)
            return None


def _lines(response: Any, limit: int) -> Iterator[bytes]:
    """Newline-framed events from a streaming response, each at most ``limit``."""
    pending = b""
    while True:
        chunk = response.read1(65536)
        if not chunk:
            return
        pending += chunk
        while True:
            line, sep, rest = pending.partition(b"\n")
            if not sep:
                break
            pending = rest
            if line.strip():
                yield line
        if len(pending) > limit:
            raise Refused("too_large", f"watch event over {limit} bytes")


def _short(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    if status is not None:
        return f"HTTP {status} {getattr(exc, 'reason', '')}".strip()
    return " ".join(str(exc).split())[:200] or type(exc).__name__
