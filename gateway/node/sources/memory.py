"""In-memory sources for fast unit tests of the sync and the node API."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gateway.node.sources.base import FhirItem, Progress, Skipped, StudyRecord


@dataclass
class MemoryDicomSource:
    items: list[StudyRecord | Skipped] = field(default_factory=list)
    name: str = "memory"

    def count(self) -> int:
        return len(self.items)

    def studies(self, progress: Progress | None = None) -> Iterator[StudyRecord | Skipped]:
        for item in self.items:
            if progress:
                progress(1)
            yield item

    def retrieve(self, study_uid: str, dest: Path) -> list[Path]:
        return []


@dataclass
class MemoryFhirSource:
    items: list[FhirItem | Skipped] = field(default_factory=list)
    name: str = "memory"

    def count(self) -> int:
        return len(self.items)

    def resources(self, progress: Progress | None = None) -> Iterator[FhirItem | Skipped]:
        for item in self.items:
            if progress:
                progress(1)
            yield item
