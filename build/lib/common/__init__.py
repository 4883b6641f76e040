"""Code every side shares: model, checkpoints, images, decision rules, settings (no Ray Serve)."""
