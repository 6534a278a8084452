"""Verbs of the ``cellweave`` command line, one module per verb.

``<verb>.py`` (``-`` as ``_``: ``map_query.py`` for ``map-query``) holds ``add_<verb>(parser,
model_help)``, which adds the verb's arguments, and ``cmd_<verb>(args)``, which runs it; the
perturbation family (``perturb``, ``finetune-perturb``, ``predict-perturb``) shares ``perturb.py``.
:data:`cellweave.cli.VERBS` names them, and :func:`cellweave.cli.build_parser` registers them in the
table's order. Helpers that several verbs use are in :mod:`cellweave._cli._common`; the grammar every
verb follows is :mod:`cellweave._cli._grammar`.
"""
