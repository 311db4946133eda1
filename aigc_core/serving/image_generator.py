"""MLflow pyfunc "model from code" for image generators (DCGAN today).

MLflow copies this file into the model and runs it at load time; the weights come back from a
safetensors file and a JSON config, so loading never unpickles anything.

Request: a DataFrame with columns `n` (images wanted) and `seed`; one row per request.
Response: one row per image: `request` (row of the request), `index` (within the request),
`seed`, `height`, `width`, `png_base64` (8-bit grayscale PNG).
"""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

MAX_IMAGES_PER_REQUEST = 10_000


class ImageGenerator(PythonModel):
    def load_context(self, context):
        from aigc_core.models.io import load_model

        self.generator = load_model(context.artifacts["weights"], context.artifacts["config"])

    def generate(self, n: int, seed: int, batch_size: int = 256, on_batch=None) -> np.ndarray:
        """n images (n, C, H, W) float32 in [0, 1]; the same (n, seed) gives the same images."""
        from aigc_core.generation.images import generate_images

        return generate_images(self.generator, n, seed, batch_size=batch_size, on_batch=on_batch)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from aigc_core.images import png_bytes, to_uint8

        rows = []
        for req, (n, seed) in enumerate(zip(model_input["n"], model_input["seed"], strict=True)):
            n, seed = int(n), int(seed)
            if not 1 <= n <= MAX_IMAGES_PER_REQUEST:
                raise ValueError(f"n must lie in [1, {MAX_IMAGES_PER_REQUEST}], got {n}")
            for i, img in enumerate(to_uint8(self.generate(n, seed))):
                rows.append(
                    {
                        "request": req,
                        "index": i,
                        "seed": seed,
                        "height": img.shape[0],
                        "width": img.shape[1],
                        "png_base64": base64.b64encode(png_bytes(img)).decode("ascii"),
                    }
                )
        return pd.DataFrame(rows)


set_model(ImageGenerator())
