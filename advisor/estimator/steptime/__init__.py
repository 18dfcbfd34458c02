"""Step time from the ops a training step runs (see docs/time-model.md).

ops       the Op record and the step's terms
device    achievable ceilings of a device: GEMM and attention FLOP/s, bandwidth, per-op host and
          kernel overhead, interconnect (GPU priors from device facts; CPU from runners/cpu_probe.py)
cost      time of one op, and of an op list by term
analytic  the op list of a step in closed form (the trace records the same list from the real step)
"""
