"""Operator commands beside the agent and config-mgmt: doctor, persistence, policy checks."""
