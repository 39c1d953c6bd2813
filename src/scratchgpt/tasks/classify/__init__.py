"""Fine-tuning for classification (the book's chapter 6, with appendix E's LoRA as an option).

The recipe is :class:`ClassifyConfig` (``model`` / ``data`` / ``train`` / ``classify``, the book's
settings in the preset ``book-ch6``) + :class:`ClassifyTask` + :func:`run`, the same shape as
pretraining and instruction tuning. Modules:

- ``config``: the config sections (no torch)
- ``task``: the classifier's forward pass (last real token) and its loss and metrics
- ``loading``: the new head (``make_classifier``), starting models, ``load_classifier``
- ``metrics``: confusion matrix, precision/recall/F1, the printed report, the accuracy plot
- ``inference``: ``classify(texts)``
- ``recipe``: ``run`` (and ``finetune_classifier``, its older call form)
"""

from __future__ import annotations

from scratchgpt._moved import moved_constant
from scratchgpt.tasks.classify.config import (
    FINETUNE_CONFIG_FILE,
    TASK_NAME,
    TRAINABLE_CHOICES,
    ClassifyConfig,
    ClassifyData,
    ClassifyModel,
    ClassifyOptions,
)
from scratchgpt.tasks.classify.inference import Prediction, classify
from scratchgpt.tasks.classify.loading import (
    Classifier,
    classifier_metadata,
    load_base_model,
    load_classifier,
    make_classifier,
)
from scratchgpt.tasks.classify.metrics import (
    classification_metrics,
    confusion_matrix,
    format_report,
    plot_accuracy,
    predict_dataset,
)
from scratchgpt.tasks.classify.recipe import (
    ADAPTERS_FILE,
    REPORT_FILE,
    FinetuneResult,
    build_splits,
    default_train_config,
    finetune_classifier,
    read_finetune_config,
    run,
    size_eval_to_epochs,
)
from scratchgpt.tasks.classify.task import (
    ClassifyTask,
    classifier_logits,
    last_token_index,
    set_dropout,
)
from scratchgpt.training.recipe import preset_mapping

__all__ = [
    "ADAPTERS_FILE",
    "FINETUNE_CONFIG_FILE",
    "REPORT_FILE",
    "TASK_NAME",
    "TRAINABLE_CHOICES",
    "Classifier",
    "ClassifyConfig",
    "ClassifyData",
    "ClassifyModel",
    "ClassifyOptions",
    "ClassifyTask",
    "FinetuneResult",
    "Prediction",
    "build_splits",
    "classification_metrics",
    "classifier_logits",
    "classifier_metadata",
    "classify",
    "confusion_matrix",
    "default_train_config",
    "finetune_classifier",
    "format_report",
    "last_token_index",
    "load_base_model",
    "load_classifier",
    "make_classifier",
    "plot_accuracy",
    "predict_dataset",
    "read_finetune_config",
    "run",
    "set_dropout",
    "size_eval_to_epochs",
]


# The book's loop settings moved into presets/book-ch6.yaml.
__getattr__ = moved_constant(
    "scratchgpt.tasks.classify.BOOK_TRAIN_DEFAULTS",
    lambda: dict(preset_mapping("book-ch6")["train"]),
    "the book's chapter-6 settings are the preset book-ch6 (ClassifyConfig's default train section)",
)
