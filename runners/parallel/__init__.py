"""One cell on N processes: `gpu.count` = N > 1 runs the same runner as N ranks under PyTorch's own
launcher (torch.distributed.run's elastic agent; NCCL on GPUs, gloo on CPU).

- `group`: the rank's view of its process group (`Group`: sums, rank 0's decisions, barriers; a
  1-process `SINGLE` that does nothing, so the single-process path is the same code) and how the model
  is wrapped per `parallel` (`wrap`: DDP, or FSDP2 `fully_shard` per decoder layer then the root).
- `launch`: the group's leader — the process `run_cell` runs in. It starts the ranks, relays rank 0's
  events and every rank's progress to the caller's hooks, and combines the ranks' results into one
  result.json (the culprit rank and its reason when the group failed).
- `rank`: what a rank process runs (`python -m runners.parallel.rank CONFIG_JSON OUT_DIR`), its link to
  the leader and its progress file.
- `files`: where a rank's files live (results, progress, error logs) and whether this process is a rank.
- `agent`: a node's torch.distributed.run agent (`run_group`; `python -m runners.parallel.agent` for
  one node of a cell spanning nodes) and `nodes`: the leader's side of such a cell (the c10d
  rendezvous store, one agent per node started here or with srun, their reports).
"""
