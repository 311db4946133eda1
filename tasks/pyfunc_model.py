"""The MLflow pyfunc "model from code" that serves every model family.

MLflow copies this file into a logged model and runs it at load time (the project never imports
it). The model's artifacts are `weights` (safetensors) and `config` (JSON, whose "family" names
the family); the family rebuilds its generator from them, so loading never unpickles anything,
and `predict` is the generator's: the request and response columns are the family kind's (see
`aigc_core.generation.images.ImageGenerator` and `aigc_core.generation.text.TextGenerator`).
The project code it reaches ships with the model (`aigc_core.serving.environment`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class FamilyModel(PythonModel):
    def load_context(self, context):
        from aigc_core import families

        config = context.artifacts["config"]
        family = families.get(json.loads(Path(config).read_text())["family"])
        self.generator = family.load_generator(context.artifacts["weights"], config)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return self.generator.predict(model_input)


set_model(FamilyModel())
