"""The Gradio app's page (layout.py), its event handlers (callbacks.py) and the checkpoints it serves (model_store.py)."""
