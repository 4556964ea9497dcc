"""Kernels. The Triton ones import triton when imported (nothing here touches the GPU driver);
host_stats and host_checks build and load small C kernels for the CPU trace statistics and
GATE-TRACE-002's sampled checks on first use (host_build says how)."""
