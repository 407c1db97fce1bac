"""anmf.model"""
