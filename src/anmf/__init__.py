"""anmf: controller RTL, analog model and co-simulation of a hybrid analog/digital NMF chip."""

__version__ = "0.1.0"
