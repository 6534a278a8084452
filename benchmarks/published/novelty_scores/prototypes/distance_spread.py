"""Prototype of the thirty-fifth session, not landed: the distance part's spread brought back to the held-out
reference cells' (deviations from the query's median divided by the ratio of median absolute deviations, when
above 1) after ``shift_adjust``'s median scaling, for queries that are not far, riding on
``sharpen_when_shifted`` (so a benchmark's rows without that flag are the rule before both). Runs a benchmark
script with ``LabelTransfer`` patched, from the repository root::

    CELLWEAVE_DATA_DIR=../shared/data .venv/bin/python benchmarks/published/novelty_scores/prototypes/distance_spread.py \
        benchmarks/annotate_files.py --adapt --out F

It produced ``novelty_scores/distance_spread_prototype_*`` and ``annotate_files/distance_spread_prototype*``
(HISTORY, thirty-fifth session)."""
import runpy, sys
import numpy as np
sys.path.insert(0, "benchmarks")
from cellweave.tl import _transfer as T

original = T.LabelTransfer._adjust_distances

def patched(self, components, z):
    adjusted = original(self, components, z)
    if self.far_ or not self.sharpen_when_shifted:  # the prototype rides on the new default's flag
        return adjusted
    for name in T.DISTANCE_COMPONENTS:
        if name not in adjusted or len(adjusted[name]) < T.MIN_SHIFT_CELLS:
            continue
        d, cal = adjusted[name], self.calibration_[name]
        med, ref = float(np.median(d)), float(np.median(cal))
        ref_spread = float(np.median(np.abs(cal - ref)))
        spread = float(np.median(np.abs(d - med))) / ref_spread if ref_spread > 0 else 1.0
        if spread > 1.0:
            adjusted[name] = med + (d - med) / spread
    return adjusted

T.LabelTransfer._adjust_distances = patched
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
