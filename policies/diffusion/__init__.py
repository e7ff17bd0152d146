"""Diffusion policies over action chunks (Chi et al., Diffusion Policy): the network
(`modeling`), the policy that samples and normalizes (`policy`), BC pretraining (`bc`), the
env runner (`runner`) and one module per alignment algorithm (`rwr`, `dpo`, `dppo`)."""
