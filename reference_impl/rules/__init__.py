"""Pure rules of the reference back office: limits, self-exclusion, fraud rules as data.

No I/O except reading the rules YAML, no clock reads (time is a parameter), no asyncio.
"""

from reference_impl.rules.decision import Decision, Outcome
from reference_impl.rules.engine import RulesEngine
from reference_impl.rules.events import Alert, MoneyEvent, Usage
from reference_impl.rules.limits import LimitsRequest, LimitsState
from reference_impl.rules.model import RulesFile, RulesFileError, load_rules
from reference_impl.rules.windows import SlidingWindow

__all__ = [
    "Alert",
    "Decision",
    "LimitsRequest",
    "LimitsState",
    "MoneyEvent",
    "Outcome",
    "RulesEngine",
    "RulesFile",
    "RulesFileError",
    "SlidingWindow",
    "Usage",
    "load_rules",
]
