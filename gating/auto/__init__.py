"""Automated gates as small estimators: fit(events) learns a geometry, predict() gives a mask."""
