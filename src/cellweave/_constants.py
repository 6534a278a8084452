"""Names shared by every layer (pure Python: importable from ``genes`` as well as ``nn``)."""

from __future__ import annotations

# Modalities (names, aliases, feature keys, context lengths) live in ``cellweave.modalities``;
# a model's modality ids are the names in its config.json (``CellWeaveConfig.modalities``).

#: Keys written into AnnData by cellweave.
EMBEDDING_KEY = "X_cellweave"
UNS_KEY = "cellweave"

#: The novelty scores of label transfer (``tl.annotate(novelty_score=...)``,
#: ``cellweave annotate --novelty-score``); the first is the default.
NOVELTY_SCORES = ("combined+composition", "combined", "distance", "softmax", "mahalanobis",
                  "distance+mahalanobis+softmax", "composition")
#: How pretraining chooses the values it hides (``CellWeaveConfig.mask_grouping``); the first is the default.
MASK_GROUPINGS = ("random", "modules")
#: The label term's classifier in pretraining (``pretrain(label_loss=...)``, ``--label-loss``); the
#: first is the default.
LABEL_LOSSES = ("linear", "cosine")
#: Depth augmentation (``Tokenizer.depth_augmentation``, ``pretrain --depth-augmentation``): the share
#: of its molecules a thinned training cell keeps is drawn log-uniformly between a floor and 1; this is
#: the floor's default (``CellWeaveConfig.depth_augmentation_min``, ``--depth-augmentation-min``).
MIN_DEPTH_FRACTION = 0.05
