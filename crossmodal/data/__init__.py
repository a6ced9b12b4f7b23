"""Datasets (RHD, STB, synthetic hands), preprocessing, HDF5 cache and datamodule."""
