"""Where everything lives under the project home (AIGC_HOME, default ./.aigc).

Nothing here touches the disk at import time: `Home` only computes paths; `ensure()` creates them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = ".aigc"


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def resolve(cls, path: str | os.PathLike | None = None) -> Home:
        """The home given explicitly, else $AIGC_HOME, else ./.aigc (made absolute)."""
        raw = path if path is not None else os.environ.get("AIGC_HOME", DEFAULT_HOME)
        return cls(Path(raw).expanduser().resolve())

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def content(self) -> Path:
        return self.root / "content"

    @property
    def runs(self) -> Path:
        """Local working files of training runs (weights before they are logged)."""
        return self.root / "runs"

    @property
    def evaluators(self) -> Path:
        """Evaluator classifiers, one per snapshot id, trained once and reused."""
        return self.root / "evaluators"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.mlflow_db}"

    def ensure(self) -> Home:
        for p in (
            self.datasets,
            self.content,
            self.runs,
            self.evaluators,
            self.mlflow_artifacts,
            self.prefect_home,
        ):
            p.mkdir(parents=True, exist_ok=True)
        return self
