"""Audio in: decoding checks and refusals (checks.py), and what training does to audio (augment.py, microphones.py)."""
