"""Training: train(), its checks, callbacks, recipe, calibration, plots, the cost estimate, MLM."""
