"""Evaluation: metrics (numpy, float64) and the report (results.json / .md / plots)."""
