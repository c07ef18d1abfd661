"""Ray executor: the only module that imports Ray (lazily, inside methods).

Tasks run as Ray tasks with retries; results come back in item order. Work files go to the output
folder, so on a multi-node cluster that folder must be on storage every node can reach (NFS, a
shared volume), as with datatrove's Ray executor. Each task runs in the driver's working folder
(Ray workers start wherever ``ray start`` ran), so relative input and output paths mean the same
on every node as on the driver.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from dataforge.errors import ConfigError, DataforgeError, InputError
from dataforge.executors.base import OnDone

log = logging.getLogger(__name__)


def _call(fn: Callable[[Any], Any], item: Any, cwd: str) -> Any:
    if os.getcwd() != cwd:
        try:
            os.chdir(cwd)
        except OSError as exc:
            import socket

            msg = (
                f"the driver's working folder {cwd} is not usable on Ray node {socket.gethostname()} "
                f"({exc.strerror or exc}): run dataforge from a folder every node can reach, or give "
                "absolute paths on shared storage"
            )
            raise InputError(msg) from None
    return fn(item)


class RayExecutor:
    """Run tasks on Ray.

    Args:
        workers: CPUs for a local Ray started by dataforge (ignored when joining a cluster).
        address: address of an existing cluster (``ray://host:10001``, ``host:6379`` or ``auto``);
            None uses ``$RAY_ADDRESS`` when it is set (as ``ray.init`` does), else starts a local
            Ray for the run and shuts it down afterwards.
        max_retries: times a task is retried when its worker dies.
    """

    name = "ray"

    def __init__(self, *, workers: int = 1, address: str | None = None, max_retries: int = 3) -> None:
        self.workers = workers
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.max_retries = max_retries
        self._started = False

    def _ensure(self) -> Any:
        try:
            import ray
        except ImportError:  # pragma: no cover - ray is a core dependency
            msg = "the ray executor needs ray: pip install 'ray>=2.40'"
            raise ConfigError(msg) from None
        if not ray.is_initialized():
            env = {"env_vars": {"POLARS_MAX_THREADS": "1"}}
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "runtime_env": env}
            if self.address:
                kwargs["address"] = self.address
            else:
                # "local" starts a new instance even when another cluster runs on this machine
                # (ray.init() would join it, and refuse num_cpus)
                kwargs["address"] = "local"
                kwargs["num_cpus"] = self.workers
            os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
            log.info("starting Ray (%s)", self.address or f"local, {self.workers} CPUs")
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                msg = f"cannot start or join Ray at {self.address or 'local'}: {exc}"
                raise ConfigError(msg) from None
            self._started = True
        if self.address:  # on a cluster the CPUs are the cluster's, not --workers
            self.workers = int(ray.cluster_resources().get("CPU", self.workers))
        return ray

    def map(
        self, fn: Callable[[Any], Any], items: Sequence[Any], *, on_done: OnDone | None = None
    ) -> list[Any]:
        if not items:
            return []
        ray = self._ensure()
        remote = ray.remote(num_cpus=1, max_retries=self.max_retries, retry_exceptions=False)(_call)
        fn_ref = ray.put(fn)  # shipped once, not once per task
        cwd = os.getcwd()
        refs = [remote.remote(fn_ref, item, cwd) for item in items]
        index = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(items)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    res = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    for other in pending:
                        ray.cancel(other)
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, DataforgeError):
                        raise cause from None
                    raise
                results[index[ref]] = res
                if on_done:
                    on_done(index[ref], res)
        return results

    def close(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
