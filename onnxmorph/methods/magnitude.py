"""One-shot magnitude importance: norms of every weight slice coupled to a unit, no data needed.

Each weight contributes the L2 norm of the slice at each channel position,
normalized by that weight's mean so that layers of different scale count alike;
a unit averages over its positions (a flattened channel has H·W of them) and sums
over weights; scores are then normalized per group so groups compare by cost, and
scaled by the unit's width (a whole attention head counts as its many channels).
"""

from __future__ import annotations

import numpy as np

from .base import PruningMethod, register_method


def weight_magnitudes(analysis) -> np.ndarray:
    score = np.zeros(analysis.num_units, dtype=np.float64)
    elements = np.zeros(analysis.num_units, dtype=np.float64)  # distinct elements per unit, summed over weights
    touched = np.zeros(analysis.num_units, dtype=np.float64)  # weights that touch each unit
    for ref in analysis.weights:
        cmap = analysis.maps.get(ref.tensor)
        w = ref.const.astype(np.float64)
        if cmap is None or w.ndim == 0 or w.shape[ref.axis] != cmap.ids.size:
            continue
        norms = np.sqrt(np.square(np.moveaxis(w, ref.axis, 0).reshape(w.shape[ref.axis], -1)).sum(axis=1))
        norms = norms / (norms.mean() + 1e-12)
        units = analysis.unit_of_element[cmap.ids.ravel()]
        ok = units >= 0
        if not ok.any():
            continue
        sums = np.bincount(units[ok], weights=norms[ok], minlength=analysis.num_units)
        counts = np.bincount(units[ok], minlength=analysis.num_units)
        score += np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
        distinct = np.unique(cmap.ids.ravel()[ok])
        elements += np.bincount(analysis.unit_of_element[distinct], minlength=analysis.num_units)
        touched += counts > 0
    for g in analysis.groups:
        mean = score[g.units].mean()
        if mean > 0:
            score[g.units] /= mean
    # A unit that is many channels of one layer (a whole attention head: 64 columns of each of Q, K, V
    # and 64 rows of the output projection) weighs as much as that many single channels.
    width = np.divide(elements, touched, out=np.ones_like(elements), where=touched > 0)
    return score * np.maximum(width, 1.0)


@register_method
class MagnitudeMethod(PruningMethod):
    name = "magnitude"
    needs_data = False

    def importance(self, analysis, cost_model, *, data=None, seed: int = 0) -> np.ndarray:
        return weight_magnitudes(analysis)
