"""RAPL (Tian et al., ICLR 2024): a visual reward from optimal transport in a representation
aligned with a person's preferences, and the baselines it is compared with.

- `encoder`: timm backbone + linear projection, frame preprocessing, start weights.
- `sinkhorn`: batched log-domain Sinkhorn with uniform marginals; cosine / Euclidean costs.
- `ot_reward`: per-step OT reward r_t = −Σ_j P*_tj C_tj against a reference video.
- `triplets`: ranked triplets (positive ≻ neutral ≻ negative).
- `alignment`: RAPL's alignment training; `rlhf`: the per-frame Bradley-Terry baseline;
  `tcc`: temporal cycle consistency (XIRL's encoder objective).
- `training`: the shared loop (AMP, DDP under torchrun, checkpoints, resume).
- `stored_labels`: alignment on the triplet rankings stored in a dataset (`embodied-pref train-rapl`).
- `video_reward`: rewards of a growing video, for RL wrappers.
"""
