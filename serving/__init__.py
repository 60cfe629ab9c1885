"""Scoring: the recognizer API and its runtimes (recognizer.py, onnx_recognizer.py, quantize.py), the output writers
(writers.py), and the engines that score many files: in this process (local_engine.py) or on Ray (ray_engine.py)."""
