"""Evaluation: benchmark loaders, graders, pass@k, reports, grading of given predictions, and the
generate-and-grade runner."""
