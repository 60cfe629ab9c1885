"""Adapting to a speaker or a recording setup (normalization.py) and how sure an answer is (calibration.py)."""
