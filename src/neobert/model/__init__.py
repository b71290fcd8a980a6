"""The model classes: the pre-trained base class and every class of the head registry (`heads.HEADS`: the
bare encoder and each task head), each under its own name."""

from neobert.model.encoder import NeoBERTPreTrainedModel
from neobert.model.heads import HEADS

globals().update({name: head.model_class for name, head in HEADS.items()})
__all__ = ["NeoBERTPreTrainedModel", *HEADS]

# Whoever imports the model classes can load "neobert" folders through the Auto classes.
from neobert import register_auto_classes as _register  # noqa: E402

_register()
