"""gatestack's machine: data, model, kernels, training, tracing and export, under the law of `contracts`."""

__version__ = "0.1.0"
