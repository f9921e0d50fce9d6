"""Serve a Python scoring function as a musicrl remote reward component.

musicrl's reward server forwards each Score batch to a component configured as

    [[reward.components]]
    kind = "remote"
    name = "clap"
    endpoint = "http://127.0.0.1:50061"
    remote_component = "clap"
    send_audio = true        # each clip arrives as mono 16-bit PCM with its sample rate
    sample_rate = 48000      # what your model wants

and adds the score to the combined reward. This package is the server side of that call: you
write

    def score(captions, audio, sample_rate):
        # captions: list[str]; audio: list[np.ndarray] (float32 in [-1, 1], mono);
        # sample_rate: int. One score per clip for every component you named.
        return {"clap": [...]}

    musicrl_scorer.serve(score, components=["clap"], version="clap-htsat-unfused-1")

and it speaks musicrl's RewardService (Score and Info, from musicrl's own reward.proto,
packaged with it), with gRPC health (`grpc.health.v1`, SERVING once the scorer is loaded),
reflection (so grpcurl and musicrl's tools can list it), gzip, batches split to `max_batch`
clips a call of your function, clips grouped by sample rate, and every request validated:
an empty batch, a clip without audio or with malformed PCM is refused with INVALID_ARGUMENT
naming the sample; a scorer that returns the wrong shape, a non-finite number or raises is
answered INTERNAL with what went wrong, and the server keeps serving.
"""

from __future__ import annotations

import importlib
import importlib.resources
import logging
import math
import pathlib
import sys
import tempfile
import threading
from concurrent import futures
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

__all__ = ["ScoreFn", "ScorerServer", "ScorerError", "serve", "protos", "pcm_to_float"]
__version__ = "0.1.0"

log = logging.getLogger("musicrl_scorer")

ScoreFn = Callable[[List[str], list, int], Dict[str, Sequence[float]]]
"""score(captions, audio, sample_rate) -> {component: [one float per clip]}."""

SERVICE = "musicrl.v1.RewardService"
MIN_RATE, MAX_RATE = 8000, 192000

_protos_lock = threading.Lock()
_protos = None


def protos():
    """The generated `reward_pb2` and `reward_pb2_grpc` modules of musicrl's reward.proto
    (generated once per process with grpcio-tools from the copy packaged here)."""
    global _protos
    with _protos_lock:
        if _protos is None:
            from grpc_tools import protoc

            root = pathlib.Path(str(importlib.resources.files("musicrl_scorer") / "proto"))
            include = str(importlib.resources.files("grpc_tools") / "_proto")
            out = tempfile.mkdtemp(prefix="musicrl-scorer-proto-")
            code = protoc.main(["protoc", f"-I{root}", f"-I{include}", f"--python_out={out}",
                                f"--grpc_python_out={out}", "musicrl/v1/reward.proto"])
            if code != 0:
                raise RuntimeError(f"grpcio-tools could not compile {root}/musicrl/v1/reward.proto")
            sys.path.insert(0, out)
            pb2 = importlib.import_module("musicrl.v1.reward_pb2")
            grpc_mod = importlib.import_module("musicrl.v1.reward_pb2_grpc")
            _protos = (pb2, grpc_mod)
        return _protos


def pcm_to_float(pcm: bytes):
    """16-bit signed little-endian PCM as a float32 numpy array in [-1, 1)."""
    import numpy as np

    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


class ScorerError(Exception):
    """What the scoring function did wrong (answered as INTERNAL)."""


@dataclass
class _Stats:
    calls: int = 0
    clips: int = 0
    function_calls: List[int] = field(default_factory=list)
    audio_seconds: float = 0.0
    sample_rates: set = field(default_factory=set)
    refused: int = 0
    failed: int = 0


class ScorerServer:
    """A running scorer: `port`, `stats`, `stop()`. Made by `serve(..., block=False)`."""

    def __init__(self, score: ScoreFn, components: Sequence[str], version: str,
                 max_batch: int = 32, concurrent: bool = False,
                 on_call: Optional[Callable[["_Stats"], None]] = None):
        if not components:
            raise ValueError("name at least one component")
        if len(set(components)) != len(components):
            raise ValueError(f"component names repeat: {list(components)}")
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if not version:
            raise ValueError("give the scorer a version (it identifies the scores it gives)")
        self.score = score
        self.components = list(components)
        self.version = version
        self.max_batch = max_batch
        self.stats = _Stats()
        self._lock = threading.Lock() if not concurrent else None
        self._stats_lock = threading.Lock()
        self.on_call = on_call
        self._server = None
        self.port: Optional[int] = None

    # -- the RewardService -------------------------------------------------------------

    def _component_messages(self, pb2):
        return [pb2.Component(name=c, version=self.version, weight=1.0) for c in self.components]

    def _call(self, captions, audio, rate):
        """The user's function on one slice, checked."""
        if self._lock is not None:
            with self._lock:
                out = self.score(captions, audio, rate)
        else:
            out = self.score(captions, audio, rate)
        if not isinstance(out, dict):
            raise ScorerError(f"the scorer returned {type(out).__name__}, not a dict of component -> scores")
        if set(out) != set(self.components):
            raise ScorerError(f"the scorer returned components {sorted(out)}, not the declared {self.components}")
        rows = {}
        for name in self.components:
            values = [float(v) for v in out[name]]
            if len(values) != len(captions):
                raise ScorerError(f"{name}: {len(values)} scores for {len(captions)} clips")
            bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
            if bad:
                raise ScorerError(f"{name}: a non-finite score for clip {bad[0]}")
            rows[name] = values
        with self._stats_lock:
            self.stats.function_calls.append(len(captions))
        return rows

    def Score(self, request, context):
        import grpc

        pb2, _ = protos()
        samples = list(request.samples)

        def refuse(msg):
            with self._stats_lock:
                self.stats.refused += 1
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, msg)

        if not samples:
            refuse("empty batch: send at least one sample")
        audio, rates = [], []
        for i, s in enumerate(samples):
            if not s.HasField("audio") or not s.audio.pcm_s16le:
                refuse(f"sample {i} has no audio: set send_audio = true on the remote component")
            a = s.audio
            if not MIN_RATE <= a.sample_rate <= MAX_RATE:
                refuse(f"sample {i}: sample rate {a.sample_rate} is outside {MIN_RATE}..{MAX_RATE}")
            if len(a.pcm_s16le) % 2:
                refuse(f"sample {i}: {len(a.pcm_s16le)} bytes of PCM is not whole 16-bit samples")
            audio.append(pcm_to_float(a.pcm_s16le))
            rates.append(a.sample_rate)
        scores: List[Optional[Dict[str, float]]] = [None] * len(samples)
        try:
            for rate in sorted(set(rates)):
                idx = [i for i, r in enumerate(rates) if r == rate]
                for start in range(0, len(idx), self.max_batch):
                    part = idx[start:start + self.max_batch]
                    rows = self._call([samples[i].caption for i in part], [audio[i] for i in part], rate)
                    for k, i in enumerate(part):
                        scores[i] = {c: rows[c][k] for c in self.components}
        except Exception as e:  # the scorer's fault, not the caller's: say what, keep serving
            with self._stats_lock:
                self.stats.failed += 1
            log.exception("scorer failed")
            context.abort(grpc.StatusCode.INTERNAL, f"the scorer failed: {type(e).__name__}: {e}")
        with self._stats_lock:
            self.stats.calls += 1
            self.stats.clips += len(samples)
            self.stats.audio_seconds += sum(len(a) / r for a, r in zip(audio, rates))
            self.stats.sample_rates |= set(rates)
            if self.on_call is not None:
                self.on_call(self.stats)
        return pb2.ScoreResponse(
            scores=[pb2.SampleScore(reward=sum(s.values()), components=[s[c] for c in self.components])
                    for s in scores],
            components=self._component_messages(pb2),
            scorer_version=self.version,
        )

    def Info(self, request, context):
        pb2, _ = protos()
        return pb2.InfoResponse(components=self._component_messages(pb2), scorer_version=self.version,
                                max_batch=0)

    # -- serving -----------------------------------------------------------------------

    def start(self, listen: str = "127.0.0.1:50061", workers: int = 4) -> int:
        """Starts serving on `listen` (port 0 picks one); returns the port."""
        import grpc
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc
        from grpc_reflection.v1alpha import reflection

        pb2, pb2_grpc = protos()
        outer = self

        class Servicer(pb2_grpc.RewardServiceServicer):
            def Score(self, request, context):
                return outer.Score(request, context)

            def Info(self, request, context):
                return outer.Info(request, context)

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                             options=[("grpc.max_receive_message_length", 64 << 20)])
        pb2_grpc.add_RewardServiceServicer_to_server(Servicer(), server)
        health_servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        names = (SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                 reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
        port = server.add_insecure_port(listen)
        if port == 0:
            raise OSError(f"cannot listen on {listen}")
        server.start()
        for name in ("", SERVICE):
            health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._server, self.port = server, port
        log.info("scorer %s (%s) serving on port %d", self.components, self.version, port)
        return port

    def wait(self):
        self._server.wait_for_termination()

    def stop(self, grace: float = 1.0):
        if self._server is not None:
            self._server.stop(grace).wait()


def serve(score: ScoreFn, components: Sequence[str], version: str, listen: str = "127.0.0.1:50061",
          max_batch: int = 32, concurrent: bool = False, block: bool = True,
          ready_file: Optional[str] = None,
          on_call: Optional[Callable[[_Stats], None]] = None) -> ScorerServer:
    """Serves `score` as musicrl's RewardService on `listen`.

    components: the names your function returns scores for (what `remote_component` names).
    version: identifies the scores (musicrl records it with every trajectory).
    max_batch: at most this many clips a call of `score` (a larger request is split).
    concurrent: let gRPC's worker threads call `score` at once (default: one call at a time,
    what most GPU models need).
    block: wait until the process is stopped (False: return the running server).
    ready_file: once serving, write {"port": N} here (for supervisors and tests).
    on_call: called with the running totals after each answered Score call.
    """
    server = ScorerServer(score, components, version, max_batch=max_batch, concurrent=concurrent,
                          on_call=on_call)
    port = server.start(listen)
    if ready_file:
        import json
        import os

        tmp = ready_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"port": port}, f)
        os.replace(tmp, ready_file)
    if block:
        server.wait()
    return server
