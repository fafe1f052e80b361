"""Where trials run: a local process pool (default) or Ray tasks. Both take (spec, options) jobs and
hand back each trial's outcome dict as it finishes; the driver keeps at most `slots` in flight.

- `LocalPool`: `workers` spawned processes; each gets the payload once (its initializer) and runs
  ORT with cores // workers intra-op threads, so the pool does not oversubscribe the machine.
- `RayPool`: one Ray task per trial with `num_cpus` / `num_gpus` per trial on an existing cluster
  (`address`), the one this process is already connected to, or a local one started here. The
  payload goes into the object store once (`ray.put`) and every task reads it from there; results
  come back through it, so a trial may run on any node and OUTDIR need only exist on the driver.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import socket
import time

from ..errors import UsageError
from .trial import Payload, TrialOptions, execute_trial, one_line


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_PAYLOAD: Payload | None = None  # a pool process's copy, set once by its initializer


def _init_worker(payload: Payload) -> None:
    global _PAYLOAD
    _PAYLOAD = payload


def _run_in_worker(spec, options: TrialOptions) -> dict:
    return execute_trial(spec, _PAYLOAD, options)


class LocalPool:
    name = "local"

    def __init__(self, payload: Payload, workers: int, threads: int | None = None):
        self.slots = workers
        self.threads = threads or max(1, available_cores() // workers)
        # spawn, not fork: a forked copy of a process that already runs ORT thread pools can hang
        self._pool = cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_init_worker, initargs=(payload,))

    def describe(self) -> dict:
        return {"backend": "local", "workers": self.slots, "threads_per_trial": self.threads}

    def submit(self, spec, options: TrialOptions):
        return self._pool.submit(_run_in_worker, spec, options)

    def wait(self, handles) -> list[tuple[object, dict]]:
        done, _ = cf.wait(handles, return_when=cf.FIRST_COMPLETED)
        out = []
        for h in done:
            try:
                out.append((h, h.result()))
            except Exception as exc:  # noqa: BLE001 - the process died (BrokenProcessPool) or could not pickle
                out.append((h, {"status": "failed", "error": f"worker process failed: {one_line(exc)}"}))
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """A one-line UsageError when nothing listens at a `host:port` or `ray://host:port` address
    (Ray itself retries an unreachable address for a long time before it gives up)."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"--ray {address}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise UsageError(f"--ray {address}: cannot reach a Ray cluster there ({exc.strerror or exc})") from None


class RayPool:
    name = "ray"

    def __init__(self, payload: Payload, address: str | None, cpus: float = 1.0, gpus: float = 0.0,
                 local_cpus: int | None = None):
        try:
            import ray
        except ImportError:
            raise UsageError("--ray needs Ray: pip install 'onnxmorph[sweep]' (or pip install ray)") from None
        self._ray = ray
        self.owned = False
        t0 = time.perf_counter()
        if not ray.is_initialized():
            if address and address != "auto":
                check_reachable(address)
            kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
            if not address:  # a local instance of our own
                kwargs["num_cpus"] = local_cpus or available_cores()
            try:
                ray.init(address=address or None, **kwargs)
            except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError...
                raise UsageError(f"--ray {address or '(local)'}: cannot start or join Ray ({one_line(exc)})") from None
            self.owned = True
        self.startup = time.perf_counter() - t0
        resources = ray.cluster_resources()
        if gpus > resources.get("GPU", 0):
            self.close()
            raise UsageError(f"--trial-gpus {gpus:g}: the Ray cluster has {resources.get('GPU', 0):g} GPUs")
        if cpus > resources.get("CPU", 0):
            self.close()
            raise UsageError(f"--trial-cpus {cpus:g}: the Ray cluster has {resources.get('CPU', 0):g} CPUs")
        self.slots = max(1, int(resources.get("CPU", 1) // cpus))
        if gpus:
            self.slots = min(self.slots, max(1, int(resources.get("GPU", 0) // gpus)))
        self.threads = max(1, int(cpus))
        self.resources = {"CPU": resources.get("CPU", 0), "GPU": resources.get("GPU", 0),
                          "nodes": len([n for n in ray.nodes() if n.get("Alive")])}
        self.cpus, self.gpus = cpus, gpus
        self._payload = ray.put(payload)
        # max_retries=0: a trial that crashed its worker is reported, not run again behind our back
        self._remote = ray.remote(execute_trial).options(num_cpus=cpus, num_gpus=gpus, max_retries=0)

    def describe(self) -> dict:
        return {"backend": "ray", "cpus_per_trial": self.cpus, "gpus_per_trial": self.gpus,
                "threads_per_trial": self.threads, "cluster": self.resources, "slots": self.slots,
                "started_here": self.owned, "startup_s": round(self.startup, 3)}

    def submit(self, spec, options: TrialOptions):
        return self._remote.remote(spec, self._payload, options)

    def wait(self, handles) -> list[tuple[object, dict]]:
        ready, _ = self._ray.wait(list(handles), num_returns=1)
        out = []
        for ref in ready:
            try:
                out.append((ref, self._ray.get(ref)))
            except Exception as exc:  # noqa: BLE001 - the worker died or the task was cancelled
                out.append((ref, {"status": "failed", "error": f"Ray task failed: {one_line(exc)}"}))
        return out

    def close(self) -> None:
        if self.owned and self._ray.is_initialized():
            self._ray.shutdown()
            self.owned = False
