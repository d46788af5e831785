from health.models.circuit import CircuitBreaker
from health.models.services import DependencyError, HealthCheck, Service, ServiceAlert, breaker_name

__all__ = ["CircuitBreaker", "DependencyError", "HealthCheck", "Service", "ServiceAlert", "breaker_name"]
