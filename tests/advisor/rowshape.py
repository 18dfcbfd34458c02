"""The keys of an advise / estimate row (design.md's JSON contract), shared by the tests of both."""

ROW_KEYS = {
    "method",
    "r",
    "gpu",
    "gpu_count",
    "total_params",
    "trainable_params",
    "memory",
    "fits",
    "time",
    "cost",
    "within_budget",
    "calibrated",
}
MEMORY_KEYS = {
    "weights_gib",
    "gradients_gib",
    "optimizer_gib",
    "activations_gib",
    "logits_gib",
    "overhead_gib",
    "allocated_gib",
    "reserved_gib",
    "device_gib",
}
