"""What a checkpoint shows of itself: its model card (model_card.py) and figures (plots.py)."""
