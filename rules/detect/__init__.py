"""Streaming anomaly detectors in river's shape; rules/detectors.py is the registry the engine
reads. numpy (and scikit-learn, for the isolation forest) are imported only when a detector is
built, so a gateway whose rules score nothing never loads them. docs/detection.md explains them.
"""
