from health.models.circuit import CircuitBreaker
from health.models.maintenance import MaintenanceWindow
from health.models.services import DependencyError, HealthCheck, Service, ServiceAlert, breaker_name
from health.models.status_pages import ServiceDay, StatusPage

__all__ = [
    "CircuitBreaker",
    "DependencyError",
    "HealthCheck",
    "MaintenanceWindow",
    "Service",
    "ServiceAlert",
    "ServiceDay",
    "StatusPage",
    "breaker_name",
]
