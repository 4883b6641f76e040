"""Ray Tune sweeps over the `train/` driver (issue: training at scale)."""
