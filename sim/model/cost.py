"""What a deployment costs: total cores and database connections, read at a glance next to
its latency ("microservices meets the SLO with 48 cores, the monolith with 32").

Cores count every replica of every service (cores per replica x replicas) plus every database
shard (cores x shards); connections are the database connections the services' pools open
(pool size per replica x replicas). Full-size figures: a ``--reduce`` run simulates a partition,
the deployment it stands for is the whole one.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.model.scenario import Deployment


@dataclass(frozen=True)
class Cost:
    """Resources a deployment holds."""

    cores: int
    service_cores: int
    database_cores: int
    connections: int

    def as_dict(self) -> dict[str, int]:
        """Plain mapping (for ``summary.json`` and tables)."""
        return {"cores": self.cores, "service_cores": self.service_cores,
                "database_cores": self.database_cores, "connections": self.connections}


def deployment_cost(deployment: Deployment) -> Cost:
    """Total cores (services and databases) and database connections of ``deployment``."""
    svc = sum(s.cores * s.replicas for s in deployment.services)
    db = sum(d.cores * d.shards for d in deployment.databases)
    conns = sum(s.db_pool * s.replicas for s in deployment.services)
    assert svc > 0 and db >= 0 and conns >= 0
    return Cost(cores=svc + db, service_cores=svc, database_cores=db, connections=conns)
