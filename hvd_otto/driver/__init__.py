"""Driver-side training: the Estimator's Params, ``fit`` orchestration, the launcher seam,
retries and watchdog, and the fitted Transformer with its persistence."""
