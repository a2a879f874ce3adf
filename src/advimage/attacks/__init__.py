"""White-box and black-box attacks in pixel units; see :func:`names` and :func:`get`."""

from . import bp, cw, ddn, fgsm, ifgsm, pgd  # noqa: F401  (register the attacks)
from .base import AttackResult, BudgetExceeded, LossOracle
from .registry import ATTACKS, AttackSpec, UnknownAttackError, get, names, register, spec

try:  # optional attacks living in their own modules
    from . import surfree  # noqa: F401
except ImportError:  # pragma: no cover
    pass
try:
    from . import cgba  # noqa: F401
except ImportError:  # pragma: no cover
    pass
try:
    from . import ttba  # noqa: F401
except ImportError:  # pragma: no cover
    pass
try:
    from . import decision_baseline  # noqa: F401
except ImportError:  # pragma: no cover
    pass

__all__ = ["ATTACKS", "AttackResult", "BudgetExceeded", "LossOracle", "UnknownAttackError", "AttackSpec", "get",
           "names", "register", "spec"]
