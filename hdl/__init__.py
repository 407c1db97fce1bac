"""anmf.hdl"""
