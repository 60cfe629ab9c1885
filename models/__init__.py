"""Emotion models; importing this package registers them with the `transformers` Auto classes."""
from transformers import AutoConfig, AutoModelForAudioClassification

from .configuration import EmotionConfig
from .classifier import BACKBONES, LAYER_MIXES, EmotionClassifier
from .pooling import POOLINGS

AutoConfig.register(EmotionConfig.model_type, EmotionConfig)
AutoModelForAudioClassification.register(EmotionConfig, EmotionClassifier)

__all__ = ["BACKBONES", "LAYER_MIXES", "POOLINGS", "EmotionClassifier", "EmotionConfig"]
