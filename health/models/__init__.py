from health.models.circuit import CircuitBreaker
from health.models.maintenance import MaintenanceWindow
from health.models.services import DependencyError, HealthCheck, Service, ServiceAlert, breaker_name

__all__ = [
    "CircuitBreaker",
    "DependencyError",
    "HealthCheck",
    "MaintenanceWindow",
    "Service",
    "ServiceAlert",
    "breaker_name",
]
