"""What serving a logged model needs from the project.

The served pyfunc model is one "models from code" file, `tasks/pyfunc_model.py`, that MLflow
runs at load time: it asks the model's family (`aigc_core.families`) for its generator.
`environment` works out what a logged model carries so it loads where this project is not
installed: the project modules it reaches (shipped as code) and pinned requirements. Nothing
here imports MLflow.
"""
