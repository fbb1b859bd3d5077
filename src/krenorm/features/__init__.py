"""Patch-AGOP, CNFA, RFM, ConvRFM and Deep ConvRFM (FEATURES.md)."""
