"""The ``go`` receiver: every ``interval``, scrape each target's enabled
profiles, turn cumulative ones into deltas and hand them on.

Threads: one scheduler thread (``receiver-go…``) ticks every interval; it
rescans discovery, then submits per target one *cpu* job (held for the CPU
window) and one *snapshot* job (heap, goroutine, mutex, block in turn) to two
thread pools of ``max_concurrency`` workers each. A target whose previous job
in a lane is still running is skipped for that lane (``go_scrape_skipped``),
so a slow target holds at most one worker per lane and never delays the
others; every request has its own deadline.

Failures are counted in ``go_scrape_errors{reason=...}`` and logged once when
a target's state (ok, or the failure reason) changes, per lane. The next
interval simply tries again. Shutdown aborts requests in flight (a CPU window
being recorded is dropped) rather than waiting for them.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from telegen.component import Consumer, CreateSettings, Host
from telegen.helpers.delta import CumulativeDelta
from telegen.helpers.emit import Emitter
from telegen.helpers.worker import Worker
from telegen.pdata import Profile
from telegen.receivers.go.config import GoReceiverConfig
from telegen.receivers.go.convert import CUMULATIVE, ENDPOINTS, Endpoint, convert
from telegen.receivers.go.discovery import Discovery
from telegen.receivers.go.scraper import REASONS, Aborted, ScrapeError, Scraper
from telegen.receivers.go.target import Target
from telegen.untrusted import Refusals

_OK = "ok"
_STOP_REASONS = ("down", "timeout")   # no point asking the same target for more this tick


class GoReceiver:
    def __init__(self, settings: CreateSettings, config: GoReceiverConfig,
                 next_consumer: Consumer) -> None:
        self._config = config
        self._next = next_consumer
        self._log = settings.logger
        self._name = f"receiver-{settings.id}".replace("/", "-")
        t = settings.telemetry
        self._errors = {r: t.counter("go_scrape_errors", reason=r)
                        for r in (*REASONS, "internal")}
        self._scrapes = {e.path: t.counter("go_scrapes", profile=e.path) for e in ENDPOINTS}
        self._skipped = {lane: t.counter("go_scrape_skipped", lane=lane)
                         for lane in ("cpu", "snapshot")}
        self._emitter = Emitter(settings, next_consumer)
        self._targets_gauge = t.gauge("go_targets")
        self._resets = t.counter("go_delta_resets")
        self._deltas = CumulativeDelta()
        self._scraper = Scraper(max_body_bytes=config.max_body_bytes,
                                refusals=Refusals(t, settings.logger))
        self._discovery = Discovery(self._probe) if config.discovery else None
        self._static = [Target(url=tg.base_url, labels=tuple(sorted(tg.labels.items())))
                        for tg in config.targets]
        self._lanes = {lane: ThreadPoolExecutor(config.max_concurrency,
                                                thread_name_prefix=f"{self._name}-{lane}")
                       for lane in ("cpu", "snapshot")}
        self._inflight: dict[tuple[str, str], Future[None]] = {}
        self._states: dict[tuple[str, str], str] = {}
        self._state_lock = threading.Lock()
        self._targets: list[Target] = []
        self._worker = Worker(self._name, self._run)
        self._stop = self._worker.stopping

    # -- lifecycle -----------------------------------------------------------------
    def start(self, host: Host) -> None:
        self._worker.start()

    def shutdown(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        self._scraper.close()
        for pool in self._lanes.values():
            pool.shutdown(wait=False, cancel_futures=True)
        if self._discovery is not None:
            self._discovery.close()
        self._worker.join(timeout_s)
        for pool in self._lanes.values():
            pool.shutdown(wait=True)

    @property
    def targets(self) -> list[Target]:
        return list(self._targets)

    def in_flight(self) -> int:
        """Scrape jobs submitted and not finished yet."""
        with self._state_lock:
            return sum(1 for f in self._inflight.values() if not f.done())

    # -- scheduling ----------------------------------------------------------------
    def _run(self) -> None:
        interval = self._config.interval
        due = time.monotonic()
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # never let a tick kill the thread
                self._errors["internal"].add(1)
                self._log.exception("%s: tick failed", self._name)
            due += interval
            now = time.monotonic()
            if due < now:          # a tick overran: skip what was missed
                due = now + interval
            if self._stop.wait(due - now):
                return

    def tick(self) -> None:
        """Resolve targets and submit this interval's scrapes."""
        targets = self._resolve_targets()
        self._targets = targets
        self._targets_gauge.set(len(targets))
        urls = {t.url for t in targets}
        dropped = self._deltas.retain(s for s in self._deltas.series()
                                      if isinstance(s, tuple) and s[0] in urls)
        if dropped:
            self._log.debug("%s: forgot %d series of targets that went away", self._name,
                            dropped)
        with self._state_lock:
            self._states = {k: v for k, v in self._states.items() if k[0] in urls}
            self._inflight = {k: f for k, f in self._inflight.items() if not f.done()}
        cpu = [e for e in ENDPOINTS if e.lane == "cpu" and getattr(self._config, e.switch)]
        rest = [e for e in ENDPOINTS if e.lane == "snapshot" and getattr(self._config, e.switch)]
        for target in targets:
            for lane, endpoints in (("cpu", cpu), ("snapshot", rest)):
                if endpoints and not self._stop.is_set():
                    self._submit(target, lane, endpoints)

    def _submit(self, target: Target, lane: str, endpoints: list[Endpoint]) -> None:
        key = (target.url, lane)
        with self._state_lock:
            running = self._inflight.get(key)
            if running is not None and not running.done():
                self._skipped[lane].add(1)
                return
            try:
                self._inflight[key] = self._lanes[lane].submit(self._scrape, target, lane,
                                                               endpoints)
            except RuntimeError:   # pool shut down: we are stopping
                return

    def _resolve_targets(self) -> list[Target]:
        found: dict[str, Target] = {}
        if self._discovery is not None:
            try:
                for t in self._discovery.scan():
                    found[t.url] = t
            except Exception:
                self._errors["internal"].add(1)
                self._log.exception("%s: discovery scan failed", self._name)
        for static in self._static:
            seen = found.get(static.url)
            # a listed target that discovery also found keeps its labels, gains the pid
            found[static.url] = static if seen is None else Target(
                url=static.url, labels=static.labels, pid=seen.pid, start_ns=seen.start_ns,
                process_name=seen.process_name, executable=seen.executable,
                container_id=seen.container_id)
        return list(found.values())

    def _probe(self, url: str) -> bool:
        try:
            body = self._scraper.get(url + "/", min(self._config.timeout, 2.0))
        except (ScrapeError, Aborted):
            return False
        return b"goroutine" in body

    # -- one job -------------------------------------------------------------------
    def _scrape(self, target: Target, lane: str, endpoints: list[Endpoint]) -> None:
        try:
            for endpoint in endpoints:
                if self._stop.is_set():
                    return
                reason, detail = self._scrape_one(target, endpoint)
                self._set_state(target, lane, reason, detail)
                if reason in _STOP_REASONS:
                    return
        except Aborted:
            return
        except Exception:
            self._errors["internal"].add(1)
            self._log.exception("%s: scraping %s failed", self._name, target.url)

    def _scrape_one(self, target: Target, endpoint: Endpoint) -> tuple[str, str]:
        """(state, detail): state is "ok" or the failure reason."""
        cfg = self._config
        url = f"{target.url}/{endpoint.path}"
        timeout = cfg.timeout
        if endpoint.lane == "cpu":
            seconds = cfg.cpu_window_seconds()
            url += f"?seconds={seconds}"
            timeout += seconds
        try:
            raw = self._scraper.fetch_profile(url, timeout)
        except ScrapeError as exc:
            self._errors[exc.reason].add(1)
            return exc.reason, exc.detail
        now = time.time_ns()
        self._scrapes[endpoint.path].add(1)
        out: list[Profile] = []
        for profile in convert(endpoint, raw, target.resource()):
            if CUMULATIVE[profile.name]:
                delta, outcome = self._deltas.delta(
                    (target.url, profile.name), profile, now_ns=now,
                    identity=target.identity, started_ns=target.start_ns)
                if outcome == "reset":
                    self._resets.add(1)
                    self._log.info("%s: %s restarted; %s counts start again from zero",
                                   self._name, target.url, profile.name)
                if delta is None:
                    continue
                profile = delta
            if len(profile):
                out.append(profile)
        if out and not self._stop.is_set():
            self._emit(out)
        return _OK, ""

    def _emit(self, profiles: list[Profile]) -> None:
        self._emitter.emit(profiles)

    def _set_state(self, target: Target, lane: str, state: str, detail: str) -> None:
        """Log when a target's state (ok, or the failure reason) changes, per lane."""
        key = (target.url, lane)
        with self._state_lock:
            before = self._states.get(key)
            self._states[key] = state
        if before == state or (before is None and state == _OK):
            return
        what = "CPU profile" if lane == "cpu" else "profiles"
        if state == _OK:
            self._log.info("%s: %s: scraping %s works again", self._name, target.url, what)
        else:
            self._log.warning("%s: %s: scraping %s failed (%s: %s); retrying every %gs",
                              self._name, target.url, what, state, detail,
                              self._config.interval)
