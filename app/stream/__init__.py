"""The Faust worker runtime: app, consumer and producer paths, recovery, timer, control, metrics."""
