"""MLflow pyfunc definitions ("models from code"). Loaded by MLflow by path; never imported by
the rest of aigc_core, which stays free of MLflow."""
