"""Evaluation: benchmark loaders, graders, pass@k, reports, and grading of given predictions."""
