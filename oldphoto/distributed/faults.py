"""Fault injection for the tests of the Ray pipeline: a pool actor that dies on chosen items.

Used only when `DistributedConfig.fault_injection` is set (`build_dataset` then runs this subclass in
`fault_pool` instead of the production `PoolActor`, which has no such hook). Rules, separated by ";":
"exit-once:<substring>:<marker file>" makes the actor os._exit() on the first live item whose name contains
<substring> (the marker file remembers it happened); "exit-always:<substring>" on every attempt.
"""
from __future__ import annotations

import os
from typing import Any

from oldphoto.distributed.config import PoolConfig
from oldphoto.distributed.pipeline import PoolActor, StageSource


class FaultInjectingActor(PoolActor):
    """`PoolActor` that first applies the `fault` rules to the live items of each batch."""

    def __init__(self, source: StageSource, role: str, pool: PoolConfig, fault: str):
        super().__init__(source, role, pool)
        self.fault = fault

    def __call__(self, batch: dict[str, Any]):
        for name, error in zip(batch["name"], batch["error"]):
            if error is None:                     # a live item (failed ones pass through the pool untouched)
                self._maybe_crash(str(name))
        return super().__call__(batch)

    def _maybe_crash(self, name: str) -> None:
        for rule in self.fault.split(";"):
            kind, _, rest = rule.partition(":")
            needle, _, marker = rest.partition(":")
            if not needle or needle not in name:
                continue
            if kind == "exit-always":
                os._exit(17)
            if kind == "exit-once" and marker and not os.path.exists(marker):
                with open(marker, "w") as f:
                    f.write(f"{os.getpid()} {name}\n")
                os._exit(17)
