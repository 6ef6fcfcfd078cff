"""Reward-model training: Bradley-Terry loss, the jitted RM step, its outer loop, and pair mining.

  loss.bradley_terry(chosen_b, rejected_b)     # pure functions on scores [B]
  step.make_rm_step(graphdef, tx, ...)          # one jitted update on a batch of pairs
  trainer.train_rm(config, workdir)            # what `launch/train_rm.py` runs
  pairs.mine_pairs(...)                        # verifier-ranked pairs of a model's own samples
"""
