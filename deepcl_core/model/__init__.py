"""The DeepCL network, built from a :class:`NetworkConfig`."""
from .network import DeepCLNet, NetworkConfig, NetworkOutput, build_network, count_parameters

__all__ = ["DeepCLNet", "NetworkConfig", "NetworkOutput", "build_network", "count_parameters"]
