"""Torch modules in the theory parameterisation (THEORY.md §1), posterior samplers and posterior
observables.
"""
