"""`onnxmorph sweep`: one prune per (method, target), compared on held-out inputs.

Modules: `spec` (targets, methods, trials), `trial` (what one trial runs, its figures),
`backends` (local process pool, Ray), `front` (Pareto front), `pick` (constraints, best.onnx),
`page` (sweep.html), `run` (the driver: `sweep()`). Ray and matplotlib are imported only when used.

`onnxmorph.sweep` is the function (as the API promises), which hides this package's name on
`onnxmorph`: import its modules as `from onnxmorph.sweep import page`, not `import onnxmorph.sweep.page`.
"""

from .front import pareto_front
from .pick import Constraint, PickResult, parse_constraints
from .run import SweepResult, sweep
from .spec import TrialSpec, parse_targets
from .trial import TrialResult

__all__ = ["Constraint", "PickResult", "SweepResult", "TrialResult", "TrialSpec", "parse_constraints",
           "parse_targets", "pareto_front", "sweep"]
