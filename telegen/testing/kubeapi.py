"""A local HTTPS stand-in for the Kubernetes API server's pod list and watch.

It speaks what the ``k8sattributes`` processor uses, as the API conventions
describe it (https://github.com/kubernetes/community/blob/master/contributors/devel/sig-architecture/api-conventions.md,
"Concurrency Control and Consistency" and "Efficient detection of changes"):

* ``GET /api/v1/pods?fieldSelector=spec.nodeName=N&limit=L&continue=T``: a
  ``PodList`` whose ``metadata.resourceVersion`` is the version of the list,
  paged with ``continue`` tokens;
* ``GET /api/v1/pods?watch=1&resourceVersion=RV&timeoutSeconds=S``: a chunked
  stream of one JSON ``{"type", "object"}`` per line for every change after
  RV (ADDED, MODIFIED, DELETED, BOOKMARK), ended by the server after S seconds;
  a version older than the kept history is ``410 Gone`` — an ERROR event with a
  Status of code 410 (what the API server sends once the watch started), or the
  HTTP status 410 (``gone_as_http``);
* a bearer token in ``Authorization``, else 401 with a Status.

No cluster runs here: the pod objects come from :func:`pod_object`, written to
look like what ``kubectl get pod -o json`` shows for pods of a Deployment,
StatefulSet, DaemonSet and CronJob.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 (openssl CLI):
    returns (ca.crt, server.crt, server.key). Ones already in ``directory`` are reused."""
    d = directory
    if all((d / n).exists() for n in ("ca.crt", "server.crt", "server.key")):
        return d / "ca.crt", d / "server.crt", d / "server.key"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", *ec, "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"),
        "-days", "2", "-subj", "/CN=telegen-test-kubernetes-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", *ec, "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"),
        "-subj", "/CN=kube-apiserver")
    (d / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.crt"),
        "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-out", str(d / "server.crt"),
        "-days", "2", "-extfile", str(d / "server.ext"))
    return d / "ca.crt", d / "server.crt", d / "server.key"


def pod_object(name: str, *, namespace: str = "default", node: str = "node-a",
               uid: str | None = None, containers: dict[str, str] | None = None,
               owner: tuple[str, str] | None = None, labels: dict[str, str] | None = None,
               annotations: dict[str, str] | None = None, runtime: str = "containerd",
               padding: int = 0) -> dict[str, Any]:
    """A pod as the API server returns it. ``containers``: name -> 64-hex id.
    ``padding`` adds an annotation of that many bytes (large objects)."""
    containers = containers if containers is not None else {"app": uuid.uuid4().hex * 2}
    meta: dict[str, Any] = {
        "name": name, "namespace": namespace, "uid": uid or str(uuid.uuid4()),
        "creationTimestamp": "2026-12-05T23:41:07Z", "labels": dict(labels or {}),
        "annotations": dict(annotations or {}),
    }
    if padding:
        meta["annotations"]["example.com/padding"] = "x" * padding
    if owner is not None:
        kind, owner_name = owner
        group = "batch/v1" if kind == "Job" else "apps/v1"
        meta["ownerReferences"] = [{"apiVersion": group, "kind": kind, "name": owner_name,
                                    "uid": str(uuid.uuid4()), "controller": True,
                                    "blockOwnerDeletion": True}]
    return {
        "kind": "Pod", "apiVersion": "v1", "metadata": meta,
        "spec": {"nodeName": node, "serviceAccountName": "default",
                 "containers": [{"name": c, "image": f"registry.example.com/{c}:1.4.2"}
                                for c in containers]},
        "status": {"phase": "Running", "podIP": "10.244.1.17", "hostIP": "192.168.49.2",
                   "containerStatuses": [
                       {"name": c, "containerID": f"{runtime}://{cid}", "ready": True,
                        "restartCount": 0, "image": f"registry.example.com/{c}:1.4.2",
                        "state": {"running": {"startedAt": "2026-12-05T23:41:09Z"}}}
                       for c, cid in containers.items()]},
    }


class FakeKubeAPI:
    """The pod list/watch endpoints over HTTPS on 127.0.0.1 (see module doc)."""

    def __init__(self, directory: Path, token: str = "t0ken-for-tests") -> None:
        self.ca_cert, cert, key = make_certificates(directory)
        self.token = token
        self.gone_as_http = False
        self.empty_watches = False             # set: every watch ends at once, no event
        self.hang = threading.Event()          # set: requests get no answer
        self.requests: list[dict[str, Any]] = []
        self.unauthorized = 0
        self._pods: dict[str, dict[str, Any]] = {}
        self._version = 100
        self._history: list[tuple[int, str, dict[str, Any]]] = []
        self._oldest = 100                     # versions before this were compacted
        self._epoch = 0                        # bumped to end every open watch
        self._cond = threading.Condition()
        self._closed = False
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="fake-kube-api", daemon=True)

    def start(self) -> FakeKubeAPI:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.hang.clear()
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------- the cluster
    def add(self, pod: dict[str, Any]) -> None:
        self._change("ADDED", pod)

    def modify(self, pod: dict[str, Any]) -> None:
        self._change("MODIFIED", pod)

    def delete(self, uid: str) -> None:
        self._change("DELETED", self._pods[uid])

    def compact(self) -> None:
        """Forget the history: watches from older versions get 410 Gone."""
        with self._cond:
            self._history.clear()
            self._oldest = self._version + 1
            self._epoch += 1
            self._cond.notify_all()

    def end_watches(self) -> None:
        """End every open watch stream, as the server does at timeoutSeconds."""
        with self._cond:
            self._epoch += 1
            self._cond.notify_all()

    def _change(self, kind: str, pod: dict[str, Any]) -> None:
        with self._cond:
            self._version += 1
            obj = json.loads(json.dumps(pod))
            obj["metadata"]["resourceVersion"] = str(self._version)
            uid = obj["metadata"]["uid"]
            if kind == "DELETED":
                self._pods.pop(uid, None)
            else:
                self._pods[uid] = obj
            self._history.append((self._version, kind, obj))
            self._cond.notify_all()

    # --------------------------------------------------------------- requests
    def list_page(self, node: str | None, limit: int, start: int) -> dict[str, Any]:
        with self._cond:
            pods = [p for p in self._pods.values() if _on(p, node)]
            version = self._version
        page = pods[start:start + limit] if limit else pods[start:]
        meta: dict[str, Any] = {"resourceVersion": str(version)}
        if limit and start + limit < len(pods):
            meta["continue"] = f"{start + limit}"
        return {"kind": "PodList", "apiVersion": "v1", "metadata": meta, "items": page}

    def watch_events(self, node: str | None, since: int, deadline: float) -> Iterator[bytes]:
        """Yields encoded events after ``since``; returns at the deadline, when
        the watch is ended, or after a 410 ERROR event."""
        with self._cond:
            epoch = self._epoch
            if since < self._oldest - 1:
                yield _event("ERROR", _status(410, "Expired", f"too old resource version: "
                                                             f"{since} ({self._oldest - 1})"))
                return
        while True:
            with self._cond:
                batch = [(v, k, o) for v, k, o in self._history if v > since]
                if not batch:
                    left = deadline - time.monotonic()
                    if self._closed or self._epoch != epoch or left <= 0:
                        return
                    self._cond.wait(min(left, 0.5))
                    continue
            for version, kind, obj in batch:
                since = version
                if _on(obj, node):
                    yield _event(kind, obj)


def _on(pod: dict[str, Any], node: str | None) -> bool:
    return node is None or pod["spec"].get("nodeName") == node


def _event(kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def _handler(api: FakeKubeAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            auth = self.headers.get("Authorization", "")
            api.requests.append({"path": url.path, "query": query, "authorization": auth})
            while api.hang.is_set():
                time.sleep(0.05)
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or token != api.token:
                api.unauthorized += 1
                return self._json(401, _status(401, "Unauthorized", "Unauthorized"))
            if url.path != "/api/v1/pods":
                return self._json(404, _status(404, "NotFound", url.path))
            selector = query.get("fieldSelector")
            node = None
            if selector is not None:
                field, _, node = selector.partition("=")
                if field != "spec.nodeName":
                    return self._json(400, _status(400, "BadRequest", selector))
            if query.get("watch") in ("1", "true", "True"):
                return self._watch(node, query)
            body = api.list_page(node, int(query.get("limit", "0")),
                                 int(query.get("continue", "0")))
            self._json(200, body)

        def _watch(self, node: str | None, query: dict[str, str]) -> None:
            since = int(query.get("resourceVersion") or "0")
            if api.gone_as_http and since < api._oldest - 1:
                return self._json(410, _status(410, "Gone", "too old resource version"))
            deadline = time.monotonic() + float(query.get("timeoutSeconds", "1800"))
            if api.empty_watches:
                deadline = 0.0
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for data in api.watch_events(node, since, deadline):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass
            self.close_connection = True

        def _json(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler
