"""Evaluation: the evaluator classifier, FID in its feature space, and related scores."""
