"""aigc_core: the pure library of aigc-pipeline (data, models, training, evaluation, generation,
curation). It imports torch, numpy, pandas and pyarrow; it never imports Prefect."""

__version__ = "0.1.0"
