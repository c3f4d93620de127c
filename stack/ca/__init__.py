"""The cluster's certificate authority: one root per cluster, node certificates, rotation."""
