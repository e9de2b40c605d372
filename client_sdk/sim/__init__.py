"""Simulated devices: the synthetic population and the ClientApp over it (simulation only).

Production code never imports this package.
"""

from client_sdk.sim.federation import SPEC_FILE, FederationSpec, default_sim_root, device_folder
from client_sdk.sim.synthetic import (
    AGE_BANDS,
    REGIONS,
    Cohort,
    DeviceInfo,
    PopulationParams,
    SyntheticPopulation,
    generate_population,
)

__all__ = [
    "AGE_BANDS",
    "REGIONS",
    "SPEC_FILE",
    "Cohort",
    "DeviceInfo",
    "FederationSpec",
    "PopulationParams",
    "SyntheticPopulation",
    "default_sim_root",
    "device_folder",
    "generate_population",
]
