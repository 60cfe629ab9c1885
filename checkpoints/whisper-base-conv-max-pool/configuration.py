"""What rebuilds a model (EmotionConfig, saved inside every checkpoint as config.json)."""
from __future__ import annotations

from transformers import PretrainedConfig


def read_layer_mix(settings: dict) -> str:
    """Return the layer mix a config or settings dict names, also for checkpoints written before layer_mix existed."""
    return settings.get("layer_mix") or ("weighted" if settings.get("layer_weighted") else "last")


def layers_text(settings: dict) -> str:
    """Return which encoder layers the head reads and how, in words, from a config or settings dict."""
    from .classifier import LAYER_MIXES  # noqa: PLC0415 (classifier imports this module)

    mix = read_layer_mix(settings)
    text = LAYER_MIXES[mix].text
    first = settings.get("first_layer") or 0
    return text if mix == "last" or not first else text.replace("all layers", f"the layers from {first} on")


class EmotionConfig(PretrainedConfig):
    """Describes an emotion classifier: backbone, pooling head and labels (`id2label`).

    backbone: a key of models.BACKBONES ("cnn1d", "whisper", "wav2vec2", "hubert", "wavlm", ...).
    encoder_config: the pretrained encoder's own config as a dict, so that a checkpoint rebuilds
        the encoder offline, without its hub id.
    """

    model_type = "speech-emotion"

    def __init__(
        self,
        backbone: str = "cnn1d",
        pooling: str = "attention",
        cnn_preset: str = "light",          # "light" or "deep" (see models/cnn1d.py)
        cnn_first_stride: int = 1,          # stride of the first CNN conv; >1 trades detail for speed
        encoder_config: dict | None = None,
        encoder_name: str | None = None,     # where the encoder came from (hub id or folder), for the record
        encoder_mode: str = "frozen",        # frozen | finetune | freeze_feature_encoder
        trainable_layers: int = 0,           # with finetune: train only the top N layers (0 = all)
        layer_mix: str | None = None,        # how the head reads the layers: last | weighted | concat (models/classifier.py)
        normalize_layers: bool = False,      # layer norm (no parameters) on each layer before the mix
        first_layer: int = 0,                # the head reads layers from this one (0: the encoder's input embedding)
        frame_pooling: int = 1,              # average every k backbone frames (k=2: Whisper's 50 Hz -> 25 Hz)
        projector_dim: int | None = 256,     # linear projection of frames before pooling (None: none)
        pool_hidden: int = 128,              # hidden size inside attention / channels of conv_max
        classifier_dropout: float = 0.5,
        classifier_hidden: int = 0,          # a hidden ReLU layer of this size in the classifier (0 = linear)
        sampling_rate: int = 16_000,
        max_seconds: float = 10.0,           # scoring window: longer audio is scored in half-overlapping windows
        n_mels: int | None = None,           # spectral backbones' mel bands (None: their own 40 / 128 / 64)
        lstm_layers: int = 3,                # mfcc_lstm: stacked LSTM layers
        lstm_hidden: int = 78,               # mfcc_lstm: units per layer; keyseg_cnn_bilstm: units per direction
        segment_seconds: float = 0.5,        # keyseg_cnn_bilstm: segment length (25 % overlap)
        key_beta: float = 5.0,               # keyseg_cnn_bilstm: K = 1 + adjacent-segment distances above beta x mean
        image_model: str | None = None,      # image CNN architecture (None: efficientnet-b0 / resnet-18), see models/
        image_weights: str | None = None,    # source of the image CNN's first weights (None: random)
        embedding_norm: str = "none",        # none | all | corpus | speaker: training standardised the pooled embedding
                                             # per group; posthoc: a head trained on raw embeddings adapts afterwards
        calibration_temperature: float = 1.0,  # logits are divided by it (fit on held-out corpora: calibrated probabilities)
        unsure_below: float | None = None,   # a top probability under this is reported as unsure (from held-out data)
        calibration: dict | None = None,     # per mode ("alone", "adapted"): {"intercept", "slope", "unsure_below"}: log T =
                                             # intercept + slope * log(novelty); replaces the two settings above
        shared_encoder: str | None = None,   # head-only checkpoint: its frozen encoder's folder, relative to it
        shared_encoder_sha256: str | None = None,  # that folder's model.safetensors digest (models/shared_encoder.py)
        **kwargs,
    ):
        self.backbone = backbone
        self.pooling = pooling
        self.cnn_preset = cnn_preset
        self.cnn_first_stride = cnn_first_stride
        self.encoder_config = encoder_config
        self.encoder_name = encoder_name
        self.encoder_mode = encoder_mode
        self.trainable_layers = trainable_layers
        self.layer_mix = read_layer_mix({"layer_mix": layer_mix, "layer_weighted": kwargs.pop("layer_weighted", False)})
        self.normalize_layers = normalize_layers
        self.first_layer = first_layer
        self.frame_pooling = frame_pooling
        self.projector_dim = projector_dim
        self.pool_hidden = pool_hidden
        self.classifier_dropout = classifier_dropout
        self.classifier_hidden = classifier_hidden
        self.sampling_rate = sampling_rate
        self.max_seconds = max_seconds
        self.n_mels = n_mels
        self.lstm_layers = lstm_layers
        self.lstm_hidden = lstm_hidden
        self.segment_seconds = segment_seconds
        self.key_beta = key_beta
        self.image_model = image_model
        self.image_weights = image_weights
        self.embedding_norm = embedding_norm
        self.calibration_temperature = calibration_temperature
        self.unsure_below = unsure_below
        self.calibration = calibration
        self.shared_encoder = shared_encoder
        self.shared_encoder_sha256 = shared_encoder_sha256
        super().__init__(**kwargs)


EmotionConfig.register_for_auto_class()  # save_pretrained copies this file and names it in auto_map
