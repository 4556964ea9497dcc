"""The training loop and the monitors it calls at step boundaries."""
