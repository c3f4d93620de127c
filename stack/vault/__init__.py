"""Secrets engine building blocks: Shamir sharing of the root key, sealing to node
keys, and the barrier keyring that encrypts secret values before they enter Raft."""
