"""Training: data sources, the Ray Train loop and its driver, evaluation and export."""
