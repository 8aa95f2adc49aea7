"""Components of the back office (player, wallet, fraud, analytics) and how they meet.

Each component is a class with async methods; the monolith wires them in-process, other
deployments put HTTP or a broker between them (the :class:`EventBus` interface).
"""

from reference_impl.services.analytics import AnalyticsService
from reference_impl.services.backoffice import BackOffice, BackOfficeConfig, build_backoffice
from reference_impl.services.events import EventBus, InProcessEventBus
from reference_impl.services.fraud import FraudService
from reference_impl.services.gate import RulesGate
from reference_impl.services.player import PlayerService
from reference_impl.services.wallet import WalletService

__all__ = [
    "AnalyticsService",
    "BackOffice",
    "BackOfficeConfig",
    "EventBus",
    "FraudService",
    "InProcessEventBus",
    "PlayerService",
    "RulesGate",
    "WalletService",
    "build_backoffice",
]
