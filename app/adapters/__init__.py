"""Files and plain-aiokafka clients used by the commands, and the local broker."""
