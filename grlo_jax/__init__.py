"""grlo_jax: JAX-native RL post-training (GRLO recipe) for LLMs."""
