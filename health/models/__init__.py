from health.models.circuit import CircuitBreaker

__all__ = ["CircuitBreaker"]
