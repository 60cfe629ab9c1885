"""The corpora (corpora.py) and what training caches of them (feature_cache.py, finetune_cache.py)."""
