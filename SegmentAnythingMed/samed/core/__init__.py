"""Core library: geometry, preprocessing, prompts, propagation, metrics. numpy/scipy only, Python 3.9+."""
