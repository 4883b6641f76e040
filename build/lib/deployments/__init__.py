"""The Ray Serve application: one module per deployment, wired together in `app.py`."""
