"""MLflow pyfunc definitions ("models from code").

Each family's file is loaded by MLflow by path when a model is logged or loaded; the rest of
aigc_core never imports them, so aigc_core stays free of MLflow.
"""

from pathlib import Path

_HERE = Path(__file__).resolve().parent

# model family -> the pyfunc file that serves it
PYFUNC_FILES = {
    "dcgan": _HERE / "image_generator.py",
    "vae": _HERE / "image_generator.py",  # the VAE is served by its decoder: (B, z) -> images
    "charlstm": _HERE / "text_generator.py",
    "transformer": _HERE / "text_generator.py",
}


def pyfunc_file(family: str) -> Path:
    try:
        return PYFUNC_FILES[family]
    except KeyError:
        raise ValueError(
            f"no pyfunc model file for family {family!r}; known: {sorted(PYFUNC_FILES)}"
        ) from None
