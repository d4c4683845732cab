"""KFR: the customer relationship register, served over gRPC."""

__version__ = "0.1.0"
