"""The MLflow pyfunc "model from code" that serves every model family.

MLflow copies this file into a logged model and runs it at load time (the project never imports
it). The model's artifacts are `weights` (safetensors) and `config` (JSON, whose "family" names
the family); the family rebuilds its generator from them, so loading never unpickles anything,
and `predict` is the generator's: the request and response columns, and the request's `params`
(a text model's sampling options; MLflow has checked them against the signature's params schema
and filled in the defaults), are the family kind's (see
`aigc_core.generation.images.ImageGenerator`, `aigc_core.generation.text.TextGenerator` and
`aigc_core.generation.audio.AudioGenerator`, which answers base64 WAV rows).
A request the generator refuses (ValueError: an option out of range, a character outside the
vocabulary) is MLflow's invalid-parameter error, so the server answers 400 with the message.
The project code it reaches ships with the model (`aigc_core.serving.environment`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class FamilyModel(PythonModel):
    def load_context(self, context):
        from aigc_core import families

        config = context.artifacts["config"]
        family = families.get(json.loads(Path(config).read_text())["family"])
        self.generator = family.load_generator(context.artifacts["weights"], config)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        try:
            if params:
                return self.generator.predict(model_input, params)
            # a model without params: a plugin generator may still take the request only
            return self.generator.predict(model_input)
        except ValueError as e:
            raise MlflowException.invalid_parameter_value(str(e)) from e


set_model(FamilyModel())
