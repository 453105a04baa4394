"""The pure core: state, features, policies, tiering and the step function.

Nothing here imports Faust, Kafka, Prometheus, does IO or reads a clock: time is passed
in. The same code runs in the Faust agents, in the batch ``classify`` replay and in unit
tests, so streaming and batch produce identical outputs for the same ordered input.
"""
