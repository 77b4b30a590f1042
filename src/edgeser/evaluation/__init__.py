"""Evaluation: metrics, cross-corpus error analysis, the report and its plots."""
