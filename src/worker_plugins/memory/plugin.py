"""The ``memory`` plugin object: reads ``[plugins.memory]`` and provides both stores."""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker_core.plugin import Config, hookimpl

from .jobs import MemoryJobStore
from .output import MemoryOutputConfig, MemoryOutputStore

if TYPE_CHECKING:
    from worker_core.plugin import Engine


class MemoryPlugin:
    """Provides :class:`MemoryJobStore` and :class:`MemoryOutputStore`, each only when no
    other enabled plugin provides that store (``trylast``)."""

    config_class = MemoryOutputConfig

    def __init__(self) -> None:
        self.output = MemoryOutputStore()
        self.jobs = MemoryJobStore()

    @hookimpl
    def configure(self, config: Config) -> None:
        self.output.configure(config.section("memory", MemoryOutputConfig))

    @hookimpl(trylast=True)
    def output_store(self, engine: Engine) -> MemoryOutputStore:
        return self.output

    @hookimpl(trylast=True)
    def job_store(self, engine: Engine) -> MemoryJobStore:
        return self.jobs
