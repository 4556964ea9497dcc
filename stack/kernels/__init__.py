"""Kernels. The Triton ones import triton when imported (nothing here touches the GPU driver);
host_stats builds and loads a small C kernel for the CPU trace statistics on first use."""
