"""Rewards: reward-model scoring, rule-based verifiers and shaping."""
