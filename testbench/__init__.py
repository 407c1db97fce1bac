"""anmf.testbench"""
