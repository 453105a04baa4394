"""Kafka-free orchestration around the core: no faust, aiokafka or prometheus_client."""
