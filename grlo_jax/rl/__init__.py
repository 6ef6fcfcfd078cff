"""RL algorithm pieces: advantage estimators, losses, the jitted RL step and its train state."""
