"""Datasets (MNIST, Fashion-MNIST, CIFAR-10, synthetic tasks) loaded without run-time downloads,
preprocessing and label maps.
"""
