"""Triton kernels. Importing a module here imports triton; nothing here touches the GPU driver."""
