"""Evaluation: metrics, fold summaries and plots."""
