"""Evolution strategies: a model trained without gradients, from a checkpoint into a new run dir.

    noise        mirrored Gaussian perturbations named by seed and sign; the ± pairs gate
    shaping      centered ranks of the population's fitness; the sum-to-zero gate
    estimate     the gradient estimate ĝ = 1/(P·σ) Σ w_i ε_i
    optimizer    Adam over the flat parameter vector, stepped with ĝ instead of .grad
    update       the step written into the model against Adam's ascent recomputed; GATE-ES-006
    population   members' weights written into a model and scored with no graph, the weights and
                 scorings each forward read (GATE-ES-002's check applied, GATE-ES-005); workers
    selftest     the estimator on a planted quadratic whose true gradient is known
    loop         one step, and the steps of a run
    rundir       OUT: its checkpoints with the whole ES state, a resume, the evidence record

docs/surgery.md ("Evolution strategies") describes the command, the equations and the gates.
"""
