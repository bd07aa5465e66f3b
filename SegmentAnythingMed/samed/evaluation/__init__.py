"""Evaluation: simulated prompts on datasets with reference masks, metrics, tables and reports (torch-free)."""
