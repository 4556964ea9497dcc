"""The tuned lens's training defaults, apart from the trainer so the command line reads them
without importing torch (`stack --help` and every other command stay fast).

They are those of the `tuned-lens` package (version 0.2.0, `scripts/ingredients.py` class
`Optimizer` and `scripts/train_loop.py`); stack.lens.train says how its learning-rate scale
becomes `DEFAULT_LR`.
"""

DEFAULT_SEQ_LEN = 128  # tokens per training sequence when none is asked for (at most the context)

# Their lr_scale 1.0 × (1 − momentum 0.9).
DEFAULT_LR = 0.1
DEFAULT_MOMENTUM = 0.9
DEFAULT_WEIGHT_DECAY = 1e-3
DEFAULT_CLIP_NORM = 1.0
DEFAULT_STEPS = 250
